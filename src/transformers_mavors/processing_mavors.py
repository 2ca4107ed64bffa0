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

The model replaces the image placeholders, in order, with the features of all pieces (thumbnail first, then
sub-images row-major) and the video placeholders with the video features.

The processor is transformers' `ProcessorMixin` with its hooks filled in (as Qwen2-VL's is), so engines that
speak that protocol (vLLM's Transformers backend) get the same expansion:

- `replace_image_token` / `replace_video_token` return what goes *between* a marker's `<|vision_start|>` and
  `<|vision_end|>`: the pads, and for a tiled image everything from the thumbnail's pads to the last slice's
  (`...pads<|vision_end|>\\n<|vision_start|>pads...`). A marker already wrapped (as the chat template writes it)
  keeps its wrapping; `get_text_with_replacements` adds the wrapping around the expansion of a bare marker.
  With `return_text_replacement_offsets=True`, each offset's `replacement` is exactly the string that replaced
  its marker, so inserting the replacements at the markers of a template-rendered prompt gives `input_ids`.
- `_get_num_multimodal_tokens(image_sizes=..., video_sizes=...)` counts placeholders without pixels.
- `return_mm_token_type_ids=True` adds `mm_token_type_ids` (1 at image placeholders, 2 at video ones).
- `sanitize_control_tokens=True` (`apply_chat_template`) works as in transformers: control tokens the user typed
  stay text and are not taken for markers.

Token compression (paper §5.4) makes a video yield fewer tokens than `chunks * h/2 * w/2`, a count only the model
knows. `processor(text=..., video_token_counts=[...])` expands video markers to the given counts instead (with or
without `videos=`), and `processor.resize_video_placeholders(inputs, counts)` shrinks the runs of already-built
inputs; see `docs/usage.md`, "Token compression".
"""

import os
from typing import Any

from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin
from transformers.utils import logging
from transformers.video_processing_utils import VideoProcessorMixin

from .chat_messages import validate_conversation
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

# The image processor options that shape an image's pieces (`MavorsImageProcessor.get_image_layout`).
_IMAGE_LAYOUT_OPTIONS = ("image_size", "patch_size", "spatial_merge_size", "max_slices")

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


class MavorsProcessorVideosKwargs(MavorsVideosKwargs, total=False):
    """Video options of a processor call: the video processor's, plus one the processor consumes itself.

    Attributes:
        video_token_counts (list of `int` or 1-D integer tensor): placeholder tokens for each video marker, in text
            order, instead of the processor's own count; the `token_counts` a model reports after token compression
            (`model.get_video_features(..., token_compression_threshold=...)`). Works with `videos` (each count must
            lie between one chunk's tokens and the whole video's) or without (text only: one count per marker).
    """

    video_token_counts: Any


class MavorsProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: MavorsImagesKwargs
    videos_kwargs: MavorsProcessorVideosKwargs
    _defaults = {"text_kwargs": {"padding": False}}


class MavorsProcessor(ProcessorMixin):
    r"""
    Processor of Mavors: a Qwen2 tokenizer, a [`MavorsImageProcessor`] and a [`MavorsVideoProcessor`] behind one
    call, plus a Qwen2.5 (ChatML) chat template that renders image and video content items.

    `processor(text=..., images=..., videos=...)` returns `input_ids` and `attention_mask` with every media
    marker expanded (see the module docstring for the layout), `pixel_values` / `image_grid_thw` for images and
    `pixel_values_videos` / `video_grid_thw` / `video_chunk_positions` for videos (SPEC §7). Batches may mix
    images and videos of any sizes and lengths; pass `padding=True` and, for generation, `padding_side="left"`.
    Video options (`fps`, `max_chunks`, `video_metadata`, `return_metadata`, ...) and image options
    (`max_slices`, ...) may be passed directly or in `apply_chat_template(..., processor_kwargs={...})`, and so may
    `video_token_counts` (see [`MavorsProcessorVideosKwargs`]), `return_text_replacement_offsets` and
    `return_mm_token_type_ids`. Markers and media must match one to one (`ValueError` otherwise, before anything
    is decoded), and truncation that cuts placeholders off is a `ValueError`.

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
        # The delimiters around each image piece and each video, under the names engines look up (vLLM wraps its
        # dummy image markers in them); Qwen2.5's vocabulary has one pair for both.
        self.image_start_token = self.video_start_token = VISION_START
        self.image_end_token = self.video_end_token = VISION_END
        self.image_start_token_id = self.video_start_token_id = self.vision_start_token_id
        self.image_end_token_id = self.video_end_token_id = self.vision_end_token_id

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

        from .loading import resolve_checkpoint

        hub = {key: kwargs.pop(key) for key in ("revision", "cache_dir", "local_files_only") if key in kwargs}
        siglip_dir = resolve_checkpoint(siglip_dir, "SigLIP checkpoint", **hub)
        qwen_dir = resolve_checkpoint(qwen_dir, "Qwen2 checkpoint", **hub)
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

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any
    ) -> "MavorsProcessor":
        """`ProcessorMixin.from_pretrained`, after checking a local directory's JSON files (tokenizer.json,
        processor_config.json, ...) so an empty or truncated one is a `ValueError` naming it."""
        from .loading import validate_checkpoint_files

        name = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(name) and not kwargs.get("subfolder"):
            validate_checkpoint_files(name, require_mavors_config=False, check_weights=False)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        """`ProcessorMixin.apply_chat_template`, after checking the messages: a malformed chat is a
        `TypeError`/`ValueError` naming the message, the content block and what is accepted."""
        validate_conversation(conversation, require_media=bool(kwargs.get("tokenize", False)))
        return super().apply_chat_template(conversation, chat_template, **kwargs)

    # -- ProcessorMixin's hooks --------------------------------------------------------------------------------
    # `ProcessorMixin.__call__` runs: prepare_inputs_layout -> validate_inputs -> _process_images / _process_videos
    # (each calling replace_*_token per item) -> get_text_with_replacements -> tokenizer -> _check_special_mm_tokens.

    def prepare_inputs_layout(
        self, images: Any = None, text: Any = None, videos: Any = None, audio: Any = None, **kwargs: Any
    ) -> tuple[Any, Any, Any, Any]:
        """Text as a list of samples, empty media lists as no media. Nothing is fetched here: the image processor
        opens paths, URLs, bytes and file objects itself, after checking their size from the header."""
        if isinstance(text, str):
            text = [text]
        elif isinstance(text, (list, tuple)):
            text = list(text)
        num_images = len(make_flat_list_of_images(images))
        if not num_images:
            images = None
        elif isinstance(text, list):
            text = self._add_missing_image_markers(text, num_images)
        if not make_list_of_videos(videos):
            # Text-only token compression: the counts stand for the videos, so `_process_videos` still runs.
            videos = [] if self._requested_video_token_counts(kwargs) is not None else None
        return images, text, videos, audio

    def _add_missing_image_markers(self, text: list[Any], num_images: int) -> list[Any]:
        """Plain prompts without any marker get one image marker per image in front, as the stock
        `image-text-to-text` pipeline expects (`pipe(images=image, text="...")`): all of them in a single prompt, or
        one per prompt when there are as many prompts as images. Anything else is left to `validate_inputs`."""
        if not all(isinstance(sample, str) for sample in text):
            return text
        if any(self.image_token in sample or self.video_token in sample for sample in text):
            return text
        if len(text) == 1:
            per_sample = [num_images]
        elif len(text) == num_images:
            per_sample = [1] * num_images
        else:
            return text
        logger.warning_once(
            "the text holds no image marker; one %s per image is put in front of the prompt", self.image_token
        )
        return [self.image_token * count + sample for count, sample in zip(per_sample, text, strict=True)]

    def validate_inputs(
        self, images: Any = None, text: Any = None, videos: Any = None, audio: Any = None, **kwargs: Any
    ) -> None:
        """Typed errors before anything is decoded: no input at all, wrongly typed text or options, malformed
        `video_token_counts`, and markers that do not match the media one to one.

        `text` comes without the control tokens `sanitize_control_tokens=True` marked as user text, so only real
        markers are counted.
        """
        if images is None and text is None and videos is None:
            raise ValueError("MavorsProcessor needs at least one of `text`, `images` or `videos`")
        counts = self._requested_video_token_counts(kwargs)
        if counts is not None:
            counts = _as_token_counts(counts)
            if text is None:
                raise ValueError(
                    "video_token_counts sets placeholder counts in `text`, but no text was passed"
                )
        try:
            self._merge_kwargs(
                self.valid_processor_kwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
            )
        except StrictDataclassFieldValidationError as error:  # transformers' type check, as a TypeError
            raise TypeError(f"MavorsProcessor: invalid keyword argument: {error}") from error
        if text is None:
            return
        if not isinstance(text, list) or not all(isinstance(sample, str) for sample in text):
            raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}")

        found = {
            "image": sum(sample.count(self.image_token) for sample in text),
            "video": sum(sample.count(self.video_token) for sample in text),
        }
        if counts is not None and len(counts) != found["video"]:
            raise ValueError(
                f"video_token_counts has {len(counts)} entries but the text holds {found['video']} "
                f"{self.video_token} marker(s); pass one count per video, in text order"
            )
        passed = {
            "image": len(make_flat_list_of_images(images)),
            "video": len(make_list_of_videos(videos)) or (len(counts) if counts is not None else 0),
        }
        for kind, token in (("image", self.image_token), ("video", self.video_token)):
            if found[kind] != passed[kind]:
                raise ValueError(
                    f"the text holds {found[kind]} {token} marker(s) but {passed[kind]} {kind}(s) were passed; each "
                    f"{kind} needs exactly one {token} in the text, in the order the {kind}s are given"
                )

    def _process_images(self, images: Any, **kwargs: Any) -> tuple[BatchFeature, list[str]]:
        processed = self.image_processor(images, **kwargs)
        replacements = [
            self.replace_image_token(processed, index, **kwargs)
            for index in range(len(processed["image_slice_grid"]))
        ]
        return processed, replacements

    def _process_videos(self, videos: Any, **kwargs: Any) -> tuple[BatchFeature | dict, list[str]]:
        counts = kwargs.pop("video_token_counts", None)
        counts = None if counts is None else _as_token_counts(counts)
        video_list = make_list_of_videos(videos)
        processed = self.video_processor(video_list, **kwargs) if video_list else {}
        if video_list and counts is not None:
            merge = kwargs.get("spatial_merge_size") or self.video_processor.spatial_merge_size
            self._check_video_token_counts(processed["video_grid_thw"].tolist(), counts, merge)
        num_videos = len(counts) if counts is not None else len(processed["video_grid_thw"])
        replacements = [
            self.replace_video_token(processed, index, video_token_counts=counts, **kwargs)
            for index in range(num_videos)
        ]
        return processed, replacements

    @staticmethod
    def _requested_video_token_counts(kwargs: dict[str, Any]) -> Any:
        if "video_token_counts" in kwargs:
            return kwargs["video_token_counts"]
        return (kwargs.get("videos_kwargs") or {}).get("video_token_counts")

    @staticmethod
    def _check_video_token_counts(grids: list[list[int]], counts: list[int], merge: int) -> None:
        for index, (count, grid) in enumerate(zip(counts, grids, strict=True)):
            # token compression never merges the first chunk, and never adds tokens
            most = num_visual_tokens(grid, merge)
            least = most // grid[0]
            if not least <= count <= most:
                raise ValueError(
                    f"video_token_counts[{index}] = {count} is impossible for video {index} ({grid[0]} chunks of "
                    f"{least} tokens): a count must lie in [{least}, {most}]"
                )

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs: Any) -> str:
        """What replaces the marker of image `image_idx` between its `<|vision_start|>` and `<|vision_end|>`: the
        thumbnail's pads, then for a tiled image one line per row of delimited sub-images (module docstring)."""
        merge = kwargs.get("spatial_merge_size") or self.image_processor.spatial_merge_size
        slice_grids = [tuple(grid) for grid in image_inputs["image_slice_grid"].tolist()]
        first = sum(1 + _num_slices(grid) for grid in slice_grids[:image_idx])
        rows, columns = slice_grids[image_idx]
        grids = image_inputs["image_grid_thw"][first : first + 1 + _num_slices((rows, columns))].tolist()
        pads = [IMAGE_TOKEN * num_visual_tokens(grid, merge) for grid in grids]
        text = pads[0]
        if len(pads) > 1:
            for row in range(rows):
                line = pads[1 + row * columns : 1 + (row + 1) * columns]
                text += VISION_END + "\n" + VISION_START + (VISION_END + VISION_START).join(line)
        return text

    def replace_video_token(
        self, video_inputs: dict, video_idx: int, video_token_counts: list[int] | None = None, **kwargs: Any
    ) -> str:
        """What replaces the marker of video `video_idx` between its `<|vision_start|>` and `<|vision_end|>`: its
        pads, `chunks * h/2 * w/2` of them, or `video_token_counts[video_idx]` after token compression."""
        if video_token_counts is not None:
            return VIDEO_TOKEN * video_token_counts[video_idx]
        merge = kwargs.get("spatial_merge_size") or self.video_processor.spatial_merge_size
        return VIDEO_TOKEN * num_visual_tokens(video_inputs["video_grid_thw"][video_idx], merge)

    def get_text_with_replacements(
        self,
        text: list[str],
        images_replacements: list[str] | None = None,
        videos_replacements: list[str] | None = None,
        audio_replacements: list[str] | None = None,
    ) -> tuple[list[str], list[list[dict[str, Any]]]]:
        """ProcessorMixin's marker replacement, then `<|vision_start|>`/`<|vision_end|>` around the expansion of
        every bare marker; a marker the text already wraps (the chat template's, vLLM's prompts) keeps its wrapping.

        Each returned offset's `replacement` and `new_span` describe the string that really replaced its marker.
        """
        original = list(text)
        text, offsets = super().get_text_with_replacements(
            text, images_replacements or [], videos_replacements or [], audio_replacements or []
        )
        for index, (sample, entries) in enumerate(zip(original, offsets, strict=True)):
            if all(_is_wrapped(sample, *entry["span"]) for entry in entries):
                continue
            pieces, last, shift = [], 0, 0
            for entry in entries:
                start, end = entry["span"]
                if not _is_wrapped(sample, start, end):
                    entry["replacement"] = VISION_START + entry["replacement"] + VISION_END
                pieces += [sample[last:start], entry["replacement"]]
                entry["new_span"] = (start + shift, start + shift + len(entry["replacement"]))
                shift += len(entry["replacement"]) - (end - start)
                last = end
            pieces.append(sample[last:])
            text[index] = "".join(pieces)
        return text, offsets

    @property
    def unused_input_names(self) -> list[str]:
        # The sub-image grid lays out the text; the model reads the pieces from `image_grid_thw` alone.
        return ["image_slice_grid"]

    def _get_num_multimodal_tokens(
        self,
        image_sizes: list[tuple[int, int]] | None = None,
        video_sizes: list[tuple[int, int, int]] | None = None,
        **kwargs: Any,
    ) -> MultiModalData:
        """Placeholder tokens of images and videos of the given sizes, without pixels (what vLLM asks).

        Args:
            image_sizes: `(height, width)` per image. Gives `num_image_tokens` (pads over the thumbnail and every
                sub-image) and `num_image_patches` (pieces: the thumbnail plus the sub-images).
            video_sizes: `(num_frames, height, width)` per video, the frames taken as **already sampled at the
                processor's `fps`** (as a `(num_frames, height, width, 3)` array without `video_metadata` is):
                `min(num_frames, max_chunks * frames_per_chunk)` are kept (accelerated playback beyond that), in
                `ceil(kept / frames_per_chunk)` chunks. Gives `num_video_tokens`.
            kwargs: processor options (`max_slices`, `fps`, `max_chunks`, ...), routed to images and videos as in
                a call.
        """
        merged = self._merge_kwargs(self.valid_processor_kwargs, **kwargs)
        data = {}
        if image_sizes is not None:
            images_kwargs = merged["images_kwargs"]
            options = {key: value for key, value in images_kwargs.items() if key in _IMAGE_LAYOUT_OPTIONS}
            merge = options.get("spatial_merge_size") or self.image_processor.spatial_merge_size
            grids = [
                self.image_processor.get_image_layout(width, height, **options)["grid_thw"]
                for height, width in image_sizes
            ]
            data["num_image_tokens"] = [
                sum(num_visual_tokens(grid, merge) for grid in pieces) for pieces in grids
            ]
            data["num_image_patches"] = [len(pieces) for pieces in grids]
        if video_sizes is not None:
            options = dict(merged["videos_kwargs"])
            options.pop("video_token_counts", None)
            merge = options.get("spatial_merge_size") or self.video_processor.spatial_merge_size
            grids = [
                self.video_processor.get_video_layout(num_frames, height, width, **options)["grid_thw"]
                for num_frames, height, width in video_sizes
            ]
            data["num_video_tokens"] = [num_visual_tokens(grid, merge) for grid in grids]
        return MultiModalData(**data)

    # -- token compression -------------------------------------------------------------------------------------

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


def _num_slices(slice_grid: tuple[int, int]) -> int:
    """Sub-images of an image whose `image_slice_grid` row is `(rows, columns)`: 0 when it is not tiled."""
    rows, columns = slice_grid
    return rows * columns if rows * columns > 1 else 0


def _is_wrapped(text: str, start: int, end: int) -> bool:
    """Whether `text[start:end]` (a marker) sits between `<|vision_start|>` and `<|vision_end|>`."""
    return text.endswith(VISION_START, 0, start) and text.startswith(VISION_END, end)


__all__ = ["MavorsProcessor", "MavorsProcessorKwargs", "MavorsProcessorVideosKwargs", "MAVORS_CHAT_TEMPLATE"]
