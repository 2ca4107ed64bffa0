"""Mavors as a native vLLM model (docs/serving.md).

vLLM runs the language model with its own Qwen2 (paged attention, continuous batching, tensor parallelism); the
vision tower (IVE + IFA) and the projector are this package's modules, so images and videos give the features
`MavorsForConditionalGeneration` gives. Preprocessing is `MavorsProcessor` itself: vLLM hands it the image, or the
video's encoded bytes, and it samples, chunks and tiles exactly as in `model.generate`.

Nothing here is imported unless vLLM is installed: vLLM finds `register` through the `vllm.general_plugins` entry
point of this package (`pyproject.toml`) and calls it in every vLLM process.

The pieces, in the order a request meets them:

- `MavorsVideoLoader`: vLLM's video fetcher (URLs, data URLs, local files) would decode frames itself, at its own
  frame choice. This loader only checks that the bytes open as a video (a typed error otherwise) and keeps them;
  the processor decodes them at its `fps`, with accelerated playback past `max_chunks`.
- `MavorsDataParser`: accepts a video as a path, bytes, or a `(T, H, W, 3)` frame array (taken as sampled at the
  processor's `fps`), images as vLLM does.
- `MavorsMultiModalProcessor`: runs `MavorsProcessor` on the media, then replaces every `<|image_pad|>` /
  `<|video_pad|>` of the prompt (already between `<|vision_start|>` and `<|vision_end|>`, as the chat template
  writes it) by what `MavorsProcessor.replace_image_token` / `replace_video_token` put there.
- `MavorsForConditionalGenerationVLLM`: vision tower + projector + vLLM's Qwen2.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.media import MediaWithBytes
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser, ProcessorBatchItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)
from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, VideoLoader
from vllm.sequence import IntermediateTensors

from ..configuration_mavors import VISION_END, VISION_START, num_visual_tokens
from ..media_io import VideoReader
from ..modeling_mavors import MavorsProjector, MavorsVisionModel
from ..processing_mavors import MavorsProcessor

VIDEO_LOADER_NAME = "mavors"


# ------------------------------------------------------------------------------------------------
# Media: the video loader and the data parser
# ------------------------------------------------------------------------------------------------


@VIDEO_LOADER_REGISTRY.register(VIDEO_LOADER_NAME, video_processor="MavorsVideoProcessor")
class MavorsVideoLoader(VideoLoader):
    """Keeps a fetched video's encoded bytes for `MavorsProcessor` to decode (fps sampling, chunk timestamps).

    Only the container header is read here, so a corrupt or empty upload fails at fetch time with a
    `ValueError` naming the problem (an HTTP 400 from the server), before the request reaches the engine.
    """

    @classmethod
    def load_bytes(cls, data: bytes, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        with VideoReader(data) as reader:
            metadata = {
                "fps": reader.source_fps,
                "duration": reader.duration,
                "video_backend": VIDEO_LOADER_NAME,
            }
        # no frames: the processor decodes `MediaWithBytes.original_bytes` itself
        return np.zeros((0,), dtype=np.uint8), metadata


class MavorsVideoItems(ProcessorBatchItems):
    """Videos as `MavorsProcessor` takes them: paths, encoded bytes, or `(T, H, W, 3)` frame arrays."""

    def __init__(self, data: Sequence[Any]) -> None:
        super().__init__(list(data), "video")


def _as_processor_video(video: Any) -> Any:
    """One video for `MavorsProcessor`: a fetched video becomes its encoded bytes, frames become one array."""
    if isinstance(video, MediaWithBytes):
        return video.original_bytes
    if isinstance(video, tuple) and len(video) == 2 and isinstance(video[1], dict):
        raise TypeError(
            "Mavors decodes videos itself (fps sampling, chunk timestamps): pass the video as a path, bytes or a "
            "(T, H, W, 3) frame array, not as (frames, metadata) from another video loader"
        )
    if isinstance(video, list) and video and not isinstance(video[0], (str, bytes)):
        return np.stack([np.asarray(frame) for frame in video])
    return video


class MavorsDataParser(MultiModalDataParser):
    """vLLM's parser, with videos kept as sources (`_as_processor_video`) instead of decoded frames."""

    def _parse_video_data(self, data: Any) -> Any:
        if data is None:
            return None
        if self.is_embeddings(data):
            return super()._parse_video_data(data)
        single = isinstance(data, (str, os.PathLike, bytes, MediaWithBytes)) or (
            isinstance(data, (np.ndarray, torch.Tensor)) and data.ndim == 4
        )
        items = [data] if single else list(data)
        return MavorsVideoItems([_as_processor_video(item) for item in items])


# ------------------------------------------------------------------------------------------------
# Processing: MavorsProcessor behind vLLM's multimodal processor
# ------------------------------------------------------------------------------------------------


class MavorsProcessingInfo(BaseProcessingInfo):
    def get_hf_processor(self, **kwargs: object) -> MavorsProcessor:
        return self.ctx.get_hf_processor(MavorsProcessor, **kwargs)

    def get_data_parser(self) -> MultiModalDataParser:
        return MavorsDataParser(
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        # any number of each, up to the user's `--limit-mm-per-prompt`
        return {"image": None, "video": None}


class MavorsDummyInputsBuilder(BaseDummyInputsBuilder[MavorsProcessingInfo]):
    """Profiling inputs of the largest size: an image tiled into `max_slices`, a video of `max_chunks` chunks."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return "".join(
            (VISION_START + token + VISION_END) * mm_counts.get(modality, 0)
            for modality, token in (("image", "<|image_pad|>"), ("video", "<|video_pad|>"))
        )

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Any = None) -> dict:
        processor = self.info.get_hf_processor()
        image_size = processor.image_processor.image_size
        side = image_size * int(np.ceil(np.sqrt(processor.image_processor.max_slices)))
        video = processor.video_processor
        frames = np.zeros(
            (video.max_chunks * video.frames_per_chunk, video.image_size, video.image_size, 3), np.uint8
        )
        data = {}
        if mm_counts.get("image"):
            data["image"] = self._get_dummy_images(width=side, height=side, num_images=mm_counts["image"])
        if mm_counts.get("video"):
            data["video"] = [frames] * mm_counts["video"]
        return data


def _image_num_pieces(slice_grid: torch.Tensor) -> torch.Tensor:
    """Pieces per image: the thumbnail, plus rows x columns sub-images when the image is tiled."""
    rows, columns = slice_grid[:, 0], slice_grid[:, 1]
    tiled = (rows * columns) > 1
    return 1 + torch.where(tiled, rows * columns, torch.zeros_like(rows))


class MavorsMultiModalProcessor(BaseMultiModalProcessor[MavorsProcessingInfo]):
    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        data = dict(hf_data)
        images = data.pop("images", None)
        try:
            outputs = super()._call_hf_processor(data, hf_kwargs) if data else BatchFeature()
        except ValueError as error:
            # vLLM's message repeats the whole input (a video's bytes); keep the processor's own reason
            reason = error.__cause__ or error
            raise ValueError(f"Mavors could not process the video(s): {reason}") from reason
        if images:
            outputs.update(self._process_images(images, hf_kwargs))
        # vLLM slices every field per item: record how many pieces / patches each item owns
        if images:
            pieces = _image_num_pieces(outputs["image_slice_grid"])
            patches = outputs["image_grid_thw"].prod(-1)
            outputs["image_num_pieces"] = pieces
            outputs["image_num_patches"] = torch.stack(
                [part.sum() for part in patches.split(pieces.tolist())]
            )
        if "video_grid_thw" in outputs:
            outputs["video_num_patches"] = outputs["video_grid_thw"].prod(-1)
        return outputs

    def _process_images(self, images: list, hf_kwargs: Mapping[str, object]) -> BatchFeature:
        """The image processor as `MavorsProcessor` calls it, keeping `image_slice_grid` (the tiling, which lays
        out the replacement text) that the processor's own output leaves out."""
        processor = self.info.get_hf_processor(**hf_kwargs)
        merged = processor._merge_kwargs(
            processor.valid_processor_kwargs, **self.info.ctx.get_merged_mm_kwargs(hf_kwargs)
        )
        options = {**merged["images_kwargs"], "return_tensors": "pt"}
        try:
            return processor.image_processor(images, **options)
        except (ValueError, TypeError) as error:
            raise ValueError(f"Mavors could not process the image(s): {error}") from error

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        fields = {}
        if "image_num_pieces" in hf_inputs:
            fields.update(
                pixel_values=MultiModalFieldConfig.flat_from_sizes("image", hf_inputs["image_num_patches"]),
                image_grid_thw=MultiModalFieldConfig.flat_from_sizes("image", hf_inputs["image_num_pieces"]),
                image_slice_grid=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
                image_num_pieces=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
                image_num_patches=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            )
        if "video_num_patches" in hf_inputs:
            chunks = hf_inputs["video_grid_thw"][:, 0]
            fields.update(
                pixel_values_videos=MultiModalFieldConfig.flat_from_sizes(
                    "video", hf_inputs["video_num_patches"]
                ),
                video_grid_thw=MultiModalFieldConfig.batched("video", keep_on_cpu=True),
                video_chunk_positions=MultiModalFieldConfig.flat_from_sizes("video", chunks),
                video_num_patches=MultiModalFieldConfig.batched("video", keep_on_cpu=True),
            )
        return fields

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        tokenizer = processor.tokenizer

        def image_replacement(index: int) -> PromptUpdateDetails:
            item = out_mm_kwargs["image"][index].get_data()
            inputs = {
                "image_slice_grid": item["image_slice_grid"][None],
                "image_grid_thw": item["image_grid_thw"],
            }
            text = processor.replace_image_token(inputs, 0)
            ids = tokenizer.encode(text, add_special_tokens=False)
            return PromptUpdateDetails.select_token_id(ids, processor.image_token_id)

        def video_replacement(index: int) -> PromptUpdateDetails:
            grid = out_mm_kwargs["video"][index].get_data()["video_grid_thw"]
            count = num_visual_tokens(grid.tolist(), processor.video_processor.spatial_merge_size)
            return PromptUpdateDetails.select_token_id(
                [processor.video_token_id] * count, processor.video_token_id
            )

        return [
            PromptReplacement(
                modality="image", target=[processor.image_token_id], replacement=image_replacement
            ),
            PromptReplacement(
                modality="video", target=[processor.video_token_id], replacement=video_replacement
            ),
        ]


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------


@MULTIMODAL_REGISTRY.register_processor(
    MavorsMultiModalProcessor, info=MavorsProcessingInfo, dummy_inputs=MavorsDummyInputsBuilder
)
class MavorsForConditionalGenerationVLLM(nn.Module, SupportsMultiModal, SupportsPP):
    """Mavors in vLLM: `MavorsVisionModel` + `MavorsProjector` (this package) and vLLM's Qwen2 language model."""

    # checkpoint names (MavorsForConditionalGeneration) -> this module's names
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.vision_model.": "vision_model.",
            "model.projector.": "projector.",
            "model.language_model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
        }
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return VISION_START + "<|image_pad|>" + VISION_END
        if modality.startswith("video"):
            return VISION_START + "<|video_pad|>" + VISION_END
        raise ValueError(f"Mavors takes images and videos, not {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        if config.vision_config.token_compression_threshold is not None:
            raise NotImplementedError(
                "token compression (vision_config.token_compression_threshold = "
                f"{config.vision_config.token_compression_threshold}) makes placeholder counts depend on the "
                "features, which vLLM needs before encoding; serve the checkpoint with the threshold set to null"
            )
        self.config = config
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            self.vision_model = MavorsVisionModel._from_config(config.vision_config)
            self.projector = MavorsProjector(config)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=maybe_prefix(prefix, "language_model"),
                architectures=["Qwen2ForCausalLM"],
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _encode(
        self, pixels: torch.Tensor, grid: torch.Tensor, positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[int]]:
        """Vision tower + projector over packed items: `(sum of tokens, text hidden)` and the tokens per item
        (an image piece, or a video)."""
        pixels = pixels.to(self.vision_model.dtype)
        vision = self.vision_model(pixels, grid.to(torch.long), positions, return_dict=True)
        return self.projector(vision.last_hidden_state), vision.token_counts.tolist()

    def _embed_images(self, kwargs: dict) -> list[torch.Tensor]:
        features, per_piece = self._encode(kwargs["pixel_values"], kwargs["image_grid_thw"], None)
        # an image's features: its thumbnail's, then its sub-images' (the order of its pads in the prompt)
        pieces = kwargs["image_num_pieces"].tolist()
        bounds = np.cumsum([0, *pieces])
        per_image = [sum(per_piece[start:end]) for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
        return list(features.split(per_image))

    def _embed_videos(self, kwargs: dict) -> list[torch.Tensor]:
        positions = kwargs["video_chunk_positions"].to(torch.long)
        features, per_video = self._encode(kwargs["pixel_values_videos"], kwargs["video_grid_thw"], positions)
        return list(features.split(per_video))

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        embeddings: list[torch.Tensor] = []
        # kwargs arrive in the order of the prompt's modalities; keep it
        for key in kwargs:
            if key == "pixel_values":
                embeddings += self._embed_images(_flat_fields(kwargs))
            elif key == "pixel_values_videos":
                embeddings += self._embed_videos(_flat_fields(kwargs))
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # vLLM's Qwen2 ties (or not) its LM head to the embeddings as `text_config.tie_word_embeddings` says
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)


def _flat_fields(kwargs: Mapping[str, object]) -> dict:
    """Batched fields as one tensor: items' rows concatenated (vLLM may pass a list when item shapes differ)."""
    flat = {}
    for key, value in kwargs.items():
        if isinstance(value, (list, tuple)):
            value = torch.cat([v if v.ndim else v[None] for v in value])
        flat[key] = value
    return flat


__all__ = [
    "MavorsVideoLoader",
    "MavorsDataParser",
    "MavorsProcessingInfo",
    "MavorsMultiModalProcessor",
    "MavorsForConditionalGenerationVLLM",
]
