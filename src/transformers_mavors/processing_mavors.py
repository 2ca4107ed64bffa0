"""Processor of Mavors: tokenizer + image processor + video processor + Qwen2.5 (ChatML) chat template.

Text and media meet here. In text, one `<|image_pad|>` (`processor.image_token`) stands for one image and one
`<|video_pad|>` (`processor.video_token`) for one video, in the order the media are passed; the chat template
renders every `{"type": "image"}` / `{"type": "video"}` content item as
`<|vision_start|><|image_pad|><|vision_end|>` (resp. `<|video_pad|>`). The processor expands each marker in place
into exactly the placeholder tokens the model will fill, `num_visual_tokens` per chunk or piece:

- video: `<|vision_start|>` + `<|video_pad|>` x (chunks * h/2 * w/2) + `<|vision_end|>`
- image, not tiled: `<|vision_start|>` + `<|image_pad|>` x (h/2 * w/2) + `<|vision_end|>`
- image tiled into n rows x m columns: the thumbnail block, then one line per row of sub-images::

      <|vision_start|>{thumbnail pads}<|vision_end|>\\n
      <|vision_start|>{slice (1,1) pads}<|vision_end|><|vision_start|>{slice (1,2) pads}<|vision_end|>...\\n
      ...
      <|vision_start|>{slice (n,1) pads}<|vision_end|>...<|vision_start|>{slice (n,m) pads}<|vision_end|>

  (MiniCPM-V's layout, the tiling the paper cites: pieces are delimited, rows end with a newline).

A marker already wrapped in `<|vision_start|>`/`<|vision_end|>` (as the chat template writes it) reuses that
wrapping; a bare marker gets it added. The model replaces the image placeholders, in order, with the features
of all pieces (thumbnail first, then sub-images row-major) and the video placeholders with the video features.

Token compression (paper §5.4) makes a video yield fewer tokens than `chunks * h/2 * w/2`, a count only the model
knows. `processor(text=..., video_token_counts=[...])` expands video markers to the given counts instead (with or
without `videos=`), and `processor.resize_video_placeholders(inputs, counts)` shrinks the runs of already-built
inputs; see `docs/usage.md`, "Token compression".
"""

import os
import re
from typing import Any

from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import logging
from transformers.video_processing_utils import VideoProcessorMixin

from .configuration_mavors import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END,
    VISION_SPECIAL_TOKENS,
    VISION_START,
    add_vision_special_tokens,
    num_visual_tokens,
)
from .image_processing_mavors import (
    SIGLIP_MEAN,
    SIGLIP_STD,
    MavorsImageProcessor,
    MavorsImagesKwargs,
    make_flat_list_of_images,
)
from .video_processing_mavors import MavorsVideoProcessor, MavorsVideosKwargs, make_list_of_videos

logger = logging.get_logger(__name__)


# transformers marks user-written control tokens with these when `sanitize_control_tokens=True`; such marked
# placeholders are plain text and must not count as media markers.
try:
    from transformers.processing_utils import _MARKED_RE, _UNMARKED
except ImportError:  # pragma: no cover - older or newer transformers
    _MARKED_RE, _UNMARKED = re.compile(r"(?!)"), ""

# Qwen2.5's ChatML with media items, as in Qwen2.5-VL. `{% generation %}` marks assistant turns so that
# `return_assistant_tokens_mask=True` (TRL's assistant-only loss) works. `add_vision_id=True` numbers media.
MAVORS_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) -}}{{- '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- render(message['content']) -}}{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _as_token_counts(counts: Any, name: str = "video_token_counts") -> list[int]:
    """A list of positive ints from a list, tuple, 1-D integer tensor or array of counts."""
    if hasattr(counts, "tolist") and not isinstance(counts, (list, tuple)):
        if getattr(counts, "ndim", 1) != 1 or "int" not in str(getattr(counts, "dtype", "int")):
            raise TypeError(
                f"{name} must be a 1-D integer tensor or a list of ints, got {type(counts).__name__} of dtype "
                f"{getattr(counts, 'dtype', None)} and shape {tuple(getattr(counts, 'shape', ()))}"
            )
        counts = counts.tolist()
    if not isinstance(counts, (list, tuple)) or not all(
        isinstance(count, int) and not isinstance(count, bool) for count in counts
    ):
        raise TypeError(f"{name} must be a list of ints (one per video), got {counts!r}")
    if any(count < 1 for count in counts):
        raise ValueError(
            f"{name} must be >= 1 each (a video yields at least one chunk of tokens), got {list(counts)}"
        )
    return list(counts)


class MavorsProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: MavorsImagesKwargs
    videos_kwargs: MavorsVideosKwargs
    _defaults = {"text_kwargs": {"padding": False}}


class MavorsProcessor(ProcessorMixin):
    r"""
    Processor of Mavors: a Qwen2 tokenizer, a [`MavorsImageProcessor`] and a [`MavorsVideoProcessor`] behind one
    call, plus a Qwen2.5 (ChatML) chat template that renders image and video content items.

    `processor(text=..., images=..., videos=...)` returns `input_ids` and `attention_mask` with every media
    marker expanded (see the module docstring for the layout), `pixel_values` / `image_grid_thw` for images and
    `pixel_values_videos` / `video_grid_thw` / `video_chunk_positions` for videos (SPEC §7). Batches may mix
    images and videos of any sizes and lengths; pass `padding=True` and, for generation, `padding_side="left"`.
    Video options (`fps`, `max_chunks`, ...) and image options (`max_slices`, ...) may be passed directly or in
    `apply_chat_template(..., processor_kwargs={...})`.

    Args:
        image_processor ([`MavorsImageProcessor`]):
            Dynamic resolution and sub-image tiling of images.
        video_processor ([`MavorsVideoProcessor`]):
            Decoding, fixed-fps sampling and chunking of videos.
        tokenizer ([`Qwen2Tokenizer`]):
            A tokenizer holding the special tokens `<|vision_start|>`, `<|vision_end|>`, `<|image_pad|>` and
            `<|video_pad|>` (see [`MavorsProcessor.add_vision_special_tokens`]).
        chat_template (`str`, *optional*):
            Jinja chat template; defaults to Mavors' Qwen2.5 ChatML template.
    """

    valid_processor_kwargs = MavorsProcessorKwargs

    def __init__(
        self,
        image_processor: MavorsImageProcessor | None = None,
        video_processor: MavorsVideoProcessor | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        if chat_template is None:
            chat_template = MAVORS_CHAT_TEMPLATE
        super().__init__(image_processor, video_processor, tokenizer, chat_template=chat_template, **kwargs)
        vocab = tokenizer.get_vocab()
        missing = [token for token in VISION_SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(
                f"the tokenizer lacks the vision special tokens {missing}; add them with "
                "`MavorsProcessor.add_vision_special_tokens(tokenizer)` (and resize the model's embeddings), or "
                "build the processor with `MavorsProcessor.from_vision_text_pretrained`"
            )
        self.image_token, self.video_token = IMAGE_TOKEN, VIDEO_TOKEN
        self.vision_start_token, self.vision_end_token = VISION_START, VISION_END
        self.image_token_id = vocab[IMAGE_TOKEN]
        self.video_token_id = vocab[VIDEO_TOKEN]
        self.vision_start_token_id = vocab[VISION_START]
        self.vision_end_token_id = vocab[VISION_END]

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        # Without torchvision, `transformers.VideoProcessorMixin` is not exported and the base check fails for
        # every video processor; check against the class itself instead.
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(
                    f"video_processor must be a VideoProcessorMixin (e.g. MavorsVideoProcessor), got "
                    f"{type(argument).__name__}"
                )
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    # -- building ----------------------------------------------------------------------------------------------

    @staticmethod
    def add_vision_special_tokens(tokenizer: Any) -> int:
        """Add whichever of `<|vision_start|>`, `<|vision_end|>`, `<|image_pad|>`, `<|video_pad|>` the tokenizer
        lacks, as special tokens. Returns how many were added (resize the model's embeddings by as many)."""
        return add_vision_special_tokens(tokenizer)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        siglip_dir: str | os.PathLike,
        qwen_dir: str | os.PathLike,
        frames_per_chunk: int = 16,
        fps: float | None = None,
        max_chunks: int | None = None,
        max_slices: int = 9,
        **kwargs: Any,
    ) -> "MavorsProcessor":
        """Build a processor from a SigLIP checkpoint (its preprocessor config and model config) and a Qwen2 one.

        R_v (`image_size`) and `patch_size` come from the SigLIP (vision) config, mean, std, resampling and
        rescale factor from its preprocessor config; the tokenizer from `qwen_dir`, with the vision special tokens
        added if it lacks them (a warning says so: the language model's embeddings then need resizing).
        `frames_per_chunk` must equal the model's. `fps` and `max_chunks` default to the video processor's
        defaults. Other keyword arguments go to whichever sub-processor accepts them (e.g. `max_image_pixels`,
        `spatial_merge_size`); anything else is a `TypeError`.
        """
        from transformers import AutoConfig, AutoTokenizer
        from transformers.image_processing_base import ImageProcessingMixin

        preprocessor, _ = ImageProcessingMixin.get_image_processor_dict(siglip_dir)
        config = AutoConfig.from_pretrained(siglip_dir)
        vision_config = getattr(config, "vision_config", None) or config
        image_size, patch_size = int(vision_config.image_size), int(vision_config.patch_size)
        size = preprocessor.get("size") or {}
        if isinstance(size, dict) and size.get("height") not in (None, image_size):
            logger.warning(
                f"{siglip_dir}: preprocessor size {size} differs from the vision config's image_size={image_size}; "
                "using image_size (the position-embedding grid the ViT was trained on)"
            )
        common = {
            "image_size": image_size,
            "patch_size": patch_size,
            "image_mean": list(preprocessor.get("image_mean", SIGLIP_MEAN)),
            "image_std": list(preprocessor.get("image_std", SIGLIP_STD)),
            "resample": preprocessor.get("resample", MavorsImageProcessor.resample),
            "rescale_factor": preprocessor.get("rescale_factor", MavorsImageProcessor.rescale_factor),
        }
        image_kwargs = {**common, "max_slices": max_slices}
        video_kwargs = {**common, "frames_per_chunk": frames_per_chunk}
        if fps is not None:
            video_kwargs["fps"] = fps
        if max_chunks is not None:
            video_kwargs["max_chunks"] = max_chunks
        for key, value in kwargs.items():
            in_image = key in MavorsImagesKwargs.__annotations__
            in_video = key in MavorsVideosKwargs.__annotations__
            if not (in_image or in_video):
                raise TypeError(
                    f"from_vision_text_pretrained got an unexpected keyword argument {key!r}; accepted: image or "
                    "video processor options (see MavorsImagesKwargs, MavorsVideosKwargs)"
                )
            if in_image:
                image_kwargs[key] = value
            if in_video:
                video_kwargs[key] = value

        tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
        added = cls.add_vision_special_tokens(tokenizer)
        if added:
            logger.warning(
                f"added {added} vision special tokens to the tokenizer of {qwen_dir}; the language model's "
                f"embeddings need {added} more rows (`model.resize_token_embeddings(len(processor.tokenizer))`)"
            )
        return cls(
            image_processor=MavorsImageProcessor(**image_kwargs),
            video_processor=MavorsVideoProcessor(**video_kwargs),
            tokenizer=tokenizer,
        )

    # -- processing --------------------------------------------------------------------------------------------

    def __call__(
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        videos: Any = None,
        **kwargs: Unpack[MavorsProcessorKwargs],
    ) -> BatchFeature:
        """Tokenize `text` with media markers expanded, and process `images` and `videos`.

        Args:
            images: an image, a list of images, or one list per sample (PIL, numpy/torch arrays, paths, URLs).
            text: a string or a list of strings (a batch), holding one `<|image_pad|>` per image and one
                `<|video_pad|>` per video, in order.
            videos: a video, a list of videos, or one list per sample (paths, file objects, (T, H, W, C) arrays,
                lists of PIL images).
            kwargs: tokenizer options (`padding`, `padding_side`, `truncation`, ...), image options
                (`max_slices`, ...), video options (`fps`, `max_chunks`, `video_metadata`, `return_metadata`, ...),
                and `return_tensors`.

            video_token_counts (list of `int` or `torch.LongTensor`, *optional*): placeholder tokens for each video
                marker, in text order, instead of the processor's own count; the `token_counts` a model reports
                after token compression (`model.get_video_features(..., token_compression_threshold=...)`). Works
                with `videos` (each count must lie between one chunk's tokens and the whole video's) or without
                (text only: one count per `<|video_pad|>` marker).

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask` (if `text`), `pixel_values`, `image_grid_thw` (if
            images), `pixel_values_videos`, `video_grid_thw`, `video_chunk_positions` (if videos) and
            `video_metadata` (if `return_metadata=True`).
        """
        if images is None and text is None and videos is None:
            raise ValueError("MavorsProcessor needs at least one of `text`, `images` or `videos`")
        video_token_counts = kwargs.pop("video_token_counts", None)
        if video_token_counts is not None:
            video_token_counts = _as_token_counts(video_token_counts)
            if text is None:
                raise ValueError(
                    "video_token_counts sets placeholder counts in `text`, but no text was passed"
                )
        try:
            output_kwargs = self._merge_kwargs(
                MavorsProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
            )
        except StrictDataclassFieldValidationError as error:
            raise TypeError(f"MavorsProcessor: invalid keyword argument: {error}") from error
        text_kwargs = output_kwargs["text_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None)
        sanitized = bool(text_kwargs.get("sanitize_control_tokens"))
        return_offsets = bool(
            text_kwargs.pop("return_text_replacement_offsets", None)
            or output_kwargs.get("return_text_replacement_offsets")
        )
        text_kwargs.pop("return_mm_token_type_ids", None)

        texts = self._as_text_batch(text)
        image_list = make_flat_list_of_images(images)
        video_list = make_list_of_videos(videos)
        if texts is not None:
            # Before any decoding: the markers must match the media one to one.
            self._check_marker_counts(texts, image_list, video_list, sanitized, video_token_counts)

        data: dict[str, Any] = {}
        image_inputs = video_inputs = None
        if image_list:
            image_inputs = self.image_processor(image_list, **output_kwargs["images_kwargs"])
            data["pixel_values"] = image_inputs["pixel_values"]
            data["image_grid_thw"] = image_inputs["image_grid_thw"]
        if video_list:
            video_inputs = self.video_processor(video_list, **output_kwargs["videos_kwargs"])
            for key in ("pixel_values_videos", "video_grid_thw", "video_chunk_positions"):
                data[key] = video_inputs[key]
            if output_kwargs["videos_kwargs"].get("return_metadata"):
                data["video_metadata"] = video_inputs["video_metadata"]

        if texts is not None:
            expanded, expected, offsets = self._expand_markers(
                texts, image_inputs, video_inputs, sanitized, video_token_counts
            )
            text_inputs = self.tokenizer(expanded, **text_kwargs)
            self._check_placeholder_counts(text_inputs["input_ids"], expected)
            data = {**text_inputs, **data}
            if return_offsets:
                data["text_replacement_offsets"] = offsets
        return BatchFeature(
            data=data,
            tensor_type=return_tensors,
            skip_tensor_conversion=["video_metadata", "text_replacement_offsets"],
        )

    @staticmethod
    def _as_text_batch(text: Any) -> list[str] | None:
        if text is None:
            return None
        if isinstance(text, str):
            return [text]
        if isinstance(text, (list, tuple)) and all(isinstance(sample, str) for sample in text):
            return list(text)
        raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}")

    def _marker_pattern(self, sanitized: bool) -> re.Pattern:
        prefix = _UNMARKED if sanitized else ""
        return re.compile(
            f"(?P<image>{prefix}{re.escape(self.image_token)})|(?P<video>{prefix}{re.escape(self.video_token)})"
        )

    def _check_marker_counts(
        self,
        texts: list[str],
        image_list: list[Any],
        video_list: list[Any],
        sanitized: bool,
        video_token_counts: list[int] | None = None,
    ) -> None:
        pattern = self._marker_pattern(sanitized)
        found = {"image": 0, "video": 0}
        for sample in texts:
            for match in pattern.finditer(sample):
                found[match.lastgroup] += 1
        if video_token_counts is not None and len(video_token_counts) != found["video"]:
            raise ValueError(
                f"video_token_counts has {len(video_token_counts)} entries but the text holds {found['video']} "
                f"{self.video_token} marker(s); pass one count per video, in text order"
            )
        if video_token_counts is not None and not video_list:
            video_list = video_token_counts  # text only: the counts stand for the videos
        for kind, token, media in (
            ("image", self.image_token, image_list),
            ("video", self.video_token, video_list),
        ):
            if found[kind] != len(media):
                raise ValueError(
                    f"the text holds {found[kind]} {token} marker(s) but {len(media)} {kind}(s) were passed; each "
                    f"{kind} needs exactly one {token} in the text, in the order the {kind}s are given"
                )

    def _image_blocks(self, image_inputs: Any) -> list[tuple[str, int]]:
        """`(text block, placeholder count)` of every image: thumbnail, then sub-images row by row."""
        if image_inputs is None:
            return []
        merge = self.image_processor.spatial_merge_size
        grids = image_inputs["image_grid_thw"].tolist()
        blocks, piece = [], 0
        for rows, columns in image_inputs["image_slice_grid"].tolist():
            num_pieces = 1 + (rows * columns if rows * columns > 1 else 0)
            counts = [num_visual_tokens(grid, merge) for grid in grids[piece : piece + num_pieces]]
            piece += num_pieces
            block = VISION_START + IMAGE_TOKEN * counts[0] + VISION_END
            if num_pieces > 1:
                for row in range(rows):
                    line = counts[1 + row * columns : 1 + (row + 1) * columns]
                    block += "\n" + "".join(VISION_START + IMAGE_TOKEN * count + VISION_END for count in line)
            blocks.append((block, sum(counts)))
        return blocks

    def _video_blocks(
        self, video_inputs: Any, video_token_counts: list[int] | None = None
    ) -> list[tuple[str, int]]:
        counts = None if video_token_counts is None else list(video_token_counts)
        if video_inputs is not None:
            merge = self.video_processor.spatial_merge_size
            grids = video_inputs["video_grid_thw"].tolist()
            full = [num_visual_tokens(grid, merge) for grid in grids]
            if counts is None:
                counts = full
            for index, (count, grid, most) in enumerate(zip(counts, grids, full, strict=True)):
                # token compression never merges the first chunk, and never adds tokens
                least = most // grid[0]
                if not least <= count <= most:
                    raise ValueError(
                        f"video_token_counts[{index}] = {count} is impossible for video {index} ({grid[0]} chunks of "
                        f"{least} tokens): a count must lie in [{least}, {most}]"
                    )
        return [(VISION_START + VIDEO_TOKEN * count + VISION_END, count) for count in counts or []]

    def _expand_markers(
        self,
        texts: list[str],
        image_inputs: Any,
        video_inputs: Any,
        sanitized: bool,
        video_token_counts: list[int] | None = None,
    ) -> tuple[list[str], list[dict[str, int]], list[list[dict[str, Any]]]]:
        """Replace each marker by its block; returns texts, expected placeholder counts and replacement offsets."""
        blocks = {
            "image": iter(self._image_blocks(image_inputs)),
            "video": iter(self._video_blocks(video_inputs, video_token_counts)),
        }
        pattern = self._marker_pattern(sanitized)
        expanded, expected, all_offsets = [], [], []
        for sample in texts:
            parts, offsets, last, shift = [], [], 0, 0
            counts = {"image": 0, "video": 0}
            for match in pattern.finditer(sample):
                kind = match.lastgroup
                block, count = next(blocks[kind])
                counts[kind] += count
                wrapped = sample[: match.start()].endswith(VISION_START) and sample[match.end() :].startswith(
                    VISION_END
                )
                replacement = block[len(VISION_START) : -len(VISION_END)] if wrapped else block
                parts += [sample[last : match.start()], replacement]
                new_start = match.start() + shift
                offsets.append(
                    {
                        "type": kind,
                        "span": match.span(),
                        "new_span": (new_start, new_start + len(replacement)),
                        "text": match.group(),
                        "replacement": replacement,
                    }
                )
                shift += len(replacement) - (match.end() - match.start())
                last = match.end()
            parts.append(sample[last:])
            expanded.append("".join(parts))
            expected.append(counts)
            all_offsets.append(offsets)
        return expanded, expected, all_offsets

    def _check_placeholder_counts(self, input_ids: Any, expected: list[dict[str, int]]) -> None:
        for index, (ids, counts) in enumerate(zip(input_ids, expected, strict=True)):
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            got = {"image": ids.count(self.image_token_id), "video": ids.count(self.video_token_id)}
            if got != counts:
                raise ValueError(
                    f"sample {index}: the tokenized text holds {got['image']} image and {got['video']} video "
                    f"placeholder tokens, but the media need {counts['image']} and {counts['video']}; this happens "
                    "when truncation cuts placeholders off: disable truncation or raise max_length"
                )

    def resize_video_placeholders(self, inputs: Any, video_token_counts: Any) -> BatchFeature:
        """Shrink each video's placeholder run in built `inputs` to `video_token_counts` (token compression).

        Step 2 of the compression path, for inputs already built with the full counts (e.g. by
        `apply_chat_template`): each video keeps the first `count` placeholders of its run, the rest are removed,
        and rows are re-padded on the side they were padded on, so nothing is decoded or tokenized again.
        `attention_mask` and `labels`, when present, follow `input_ids`.

        Args:
            inputs: the processor's output (`input_ids`, optionally `attention_mask`, `labels` and video entries).
            video_token_counts: the kept tokens of every video, in text order (`output.token_counts` of
                `model.get_video_features(..., token_compression_threshold=...)`).

        Returns:
            A new [`BatchFeature`] without `pixel_values_videos`, `video_grid_thw` and `video_chunk_positions`: pass
            the encoded videos to the model as `mm_encoder_outputs={"video": output}` instead.
        """
        import torch

        counts = _as_token_counts(video_token_counts)
        columns = {key: inputs[key] for key in ("input_ids", "attention_mask", "labels") if key in inputs}
        as_tensor = isinstance(columns["input_ids"], torch.Tensor)
        device = columns["input_ids"].device if as_tensor else None
        columns = {
            key: value.tolist() if as_tensor else [list(row) for row in value]
            for key, value in columns.items()
        }
        rows = columns["input_ids"]

        # every contiguous run of <|video_pad|> is one video (the processor wraps each in vision start/end)
        runs = []  # (row, start, length)
        for b, row in enumerate(rows):
            start = None
            for position, token in enumerate([*row, None]):
                if token == self.video_token_id and start is None:
                    start = position
                elif token != self.video_token_id and start is not None:
                    runs.append((b, start, position - start))
                    start = None
        if len(runs) != len(counts):
            raise ValueError(
                f"video_token_counts has {len(counts)} entries but input_ids hold {len(runs)} video placeholder "
                "runs; pass one count per video, in text order"
            )
        if inputs.get("video_grid_thw") is not None:
            merge = self.video_processor.spatial_merge_size
            full = [num_visual_tokens(row, merge) for row in inputs["video_grid_thw"].tolist()]
            if full != [length for _, _, length in runs]:
                raise ValueError(
                    f"input_ids hold video placeholder runs of {[length for _, _, length in runs]} tokens but "
                    f"video_grid_thw describes {full}; resize inputs the processor built with full counts, once"
                )
        dropped = [set() for _ in rows]
        for index, ((b, start, length), count) in enumerate(zip(runs, counts, strict=True)):
            if count > length:
                raise ValueError(
                    f"video_token_counts[{index}] = {count} exceeds the {length} placeholders of video {index}; "
                    "compression only removes tokens"
                )
            dropped[b].update(range(start + count, start + length))

        # keep the real (unpadded) tokens that are not dropped, then pad back to the longest row
        mask = columns.get("attention_mask") or [[1] * len(row) for row in rows]
        if any(0 in row for row in mask):
            left = any(row[0] == 0 for row in mask)
        else:
            left = self.tokenizer.padding_side == "left"
        kept = [
            [p for p, real in enumerate(mask[b]) if real and p not in dropped[b]] for b in range(len(rows))
        ]
        length = max(len(positions) for positions in kept)
        if "attention_mask" not in columns and any(len(positions) != length for positions in kept):
            columns["attention_mask"] = mask  # rows now differ in length: padding needs a mask
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        pads = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}

        data = {key: value for key, value in inputs.items() if key not in columns}
        for key in ("pixel_values_videos", "video_grid_thw", "video_chunk_positions"):
            data.pop(key, None)
        for key, column in columns.items():
            resized = []
            for b, positions in enumerate(kept):
                values = [column[b][p] for p in positions]
                padding = [pads[key]] * (length - len(values))
                resized.append(padding + values if left else values + padding)
            data[key] = torch.tensor(resized, dtype=torch.long, device=device) if as_tensor else resized
        return BatchFeature(data=data)

    # -- model compatibility, decoding ---------------------------------------------------------------------

    def check_model_config(self, config: Any) -> None:
        """Raise a `ValueError` if this processor's geometry or token ids disagree with a `MavorsConfig`.

        Call it where a processor and a model meet (pipelines, `generate` helpers): a `frames_per_chunk` that
        differs from the model's would silently produce wrongly sized pixel rows.
        """
        vision = getattr(config, "vision_config", config)
        checks = [
            (
                "frames_per_chunk",
                self.video_processor.frames_per_chunk,
                getattr(vision, "frames_per_chunk", None),
            ),
            ("patch_size", self.video_processor.patch_size, getattr(vision, "patch_size", None)),
            ("patch_size (images)", self.image_processor.patch_size, getattr(vision, "patch_size", None)),
            (
                "spatial_merge_size",
                self.video_processor.spatial_merge_size,
                getattr(vision, "spatial_merge_size", None),
            ),
            ("image_token_id", self.image_token_id, getattr(config, "image_token_id", None)),
            ("video_token_id", self.video_token_id, getattr(config, "video_token_id", None)),
        ]
        mismatches = [
            f"{name}: processor {ours}, model {theirs}"
            for name, ours, theirs in checks
            if theirs is not None and ours != theirs
        ]
        if mismatches:
            raise ValueError("processor and model disagree: " + "; ".join(mismatches))

    def post_process_image_text_to_text(
        self, generated_outputs: Any, skip_special_tokens: bool = True, **kwargs: Any
    ) -> list[str]:
        """Decode generated token ids ((batch, length) or (length,)) to a list of strings."""
        if hasattr(generated_outputs, "ndim") and generated_outputs.ndim == 1:
            generated_outputs = generated_outputs[None]
        elif (
            isinstance(generated_outputs, (list, tuple))
            and generated_outputs
            and isinstance(generated_outputs[0], int)
        ):
            generated_outputs = [generated_outputs]
        return self.tokenizer.batch_decode(
            generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs
        )

    def _get_num_multimodal_tokens(
        self, image_sizes: list[tuple[int, int]] | None = None, **kwargs: Any
    ) -> MultiModalData:
        """Placeholder tokens and pieces of images of the given `(height, width)` sizes, without pixels.

        `kwargs` may override `image_size`, `patch_size`, `spatial_merge_size` or `max_slices`.
        """
        if image_sizes is None:
            return MultiModalData()
        geometry = ("image_size", "patch_size", "spatial_merge_size", "max_slices")
        options = {key: value for key, value in kwargs.items() if key in geometry}
        merge = options.get("spatial_merge_size", self.image_processor.spatial_merge_size)
        grids = [
            self.image_processor.get_image_layout(width, height, **options)["grid_thw"]
            for height, width in image_sizes
        ]
        return MultiModalData(
            num_image_tokens=[sum(num_visual_tokens(grid, merge) for grid in pieces) for pieces in grids],
            num_image_patches=[len(pieces) for pieces in grids],
        )


__all__ = ["MavorsProcessor", "MavorsProcessorKwargs", "MAVORS_CHAT_TEMPLATE"]
