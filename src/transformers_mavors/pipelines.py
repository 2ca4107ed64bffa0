"""The `video-text-to-text` pipeline task (absent from transformers 5.23; its Hub tag exists)."""

import difflib
import inspect
from typing import Any

from transformers import AutoModelForImageTextToText, GenerationConfig
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import Pipeline
from transformers.pipelines.image_text_to_text import Chat, ImageTextToTextPipeline

from .chat_messages import validate_conversation
from .configuration_mavors import check_token_compression_threshold
from .generation import encode_videos_first, prepare_chat_inputs

# Processor options a pipeline call may set, routed into `processor_kwargs`. The parent pipeline would pass them to
# `apply_chat_template` as template variables, which transformers forwards to the processor only when the chat
# template does not read a variable of that name (and with a warning).
PROCESSOR_OPTIONS = ("fps", "max_chunks", "max_slices", "video_metadata", "max_image_pixels")
# Everything `generate` understands besides `max_new_tokens` (which the parent pipeline already routes). At call
# time the parent routes no other generation option: it would reach the processor, which ignores it.
GENERATE_OPTIONS = {k for k in GenerationConfig().to_dict() if not k.startswith("_")} - {
    "max_new_tokens",
    "transformers_version",
} | {
    "generation_config",
    "streamer",
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "assistant_model",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
}


# Call arguments besides the parent pipeline's own, the processor and generation options above.
EXTRA_CALL_OPTIONS = {
    "token_compression_threshold",
    "tools",
    "documents",
    "chat_template",
    "add_vision_id",
    "processor_kwargs",
    "generate_kwargs",
}


def _parent_call_options() -> set[str]:
    parameters = inspect.signature(ImageTextToTextPipeline._sanitize_parameters).parameters
    return {name for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD and name != "self"}


def _processor_call_options(processor) -> set[str]:
    """The keyword names the processor's typed kwargs declare (tokenizer, image and video options)."""
    kwargs_class = getattr(processor, "valid_processor_kwargs", None)
    names = set()
    for name, annotation in getattr(kwargs_class, "__annotations__", {}).items():
        names |= set(getattr(annotation, "__annotations__", {})) if name.endswith("_kwargs") else {name}
    return names


def check_call_options(processor, kwargs: dict[str, Any]) -> None:
    """`TypeError` naming any keyword argument the pipeline does not know (with the closest known name): it would
    otherwise be dropped with a warning and the model would answer without it."""
    known = _parent_call_options() | set(PROCESSOR_OPTIONS) | GENERATE_OPTIONS | EXTRA_CALL_OPTIONS
    known |= _processor_call_options(processor) | {"videos", "text", "images", "batch_size", "num_workers"}
    unknown = [name for name in kwargs if name not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(f"video-text-to-text pipeline got unexpected keyword argument(s) {', '.join(hints)}")


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


class ChatBatch:
    """Several chats processed and generated together (left padding), one pipeline forward."""

    def __init__(self, chats: list[Chat]):
        self.chats = chats


def _is_chat(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and isinstance(value[0], dict)
        and "role" in value[0]
    )


def _is_chat_list(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_chat(v) for v in value)


def _looks_like_chat(value) -> bool:
    """A list holding dicts (messages) or lists of dicts (chats): checked as chat messages, not as prompts."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    first = value[0]
    return isinstance(first, dict) or (
        isinstance(first, (list, tuple)) and any(isinstance(m, dict) for m in first)
    )


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_single_video(value) -> bool:
    """A path, file object or frame array is one video; a list of them is several (a list of PIL images is one)."""
    if not isinstance(value, (list, tuple)):
        return True
    from PIL import Image

    return len(value) > 0 and isinstance(value[0], Image.Image)


class VideoTextToTextPipeline(ImageTextToTextPipeline):
    """Generate text from videos (and images) plus text, with any Mavors checkpoint.

    ```python
    pipe = pipeline("video-text-to-text", model="path/to/mavors")
    pipe(videos="clip.mp4", text="Describe the video.", max_new_tokens=64, fps=8)
    pipe(text=[{"role": "user", "content": [{"type": "video", "path": "clip.mp4"},
                                             {"type": "text", "text": "What happens?"}]}])
    ```

    `videos` takes a path, a file object, a `(T, H, W, C)` array or a list of PIL frames, or a list of those
    (one prompt each). `text` is a prompt (str, or one per video) or chat messages whose content holds
    `{"type": "video" | "image" | "text", ...}` blocks. Processor options (`fps`, `max_chunks`, `max_slices`,
    `video_metadata`) and generation kwargs (`max_new_tokens`, `do_sample`, `streamer`, ...) pass through;
    `batch_size` groups prompts into one left-padded `generate` call. Returns, per prompt, a list of dicts with
    `"generated_text"` (and `"input_text"`); `return_full_text=False` returns only the new text.

    `token_compression_threshold=0.9` (or a checkpoint whose vision config sets it) merges similar tokens of
    adjacent chunks (paper §5.4): the pipeline then encodes the videos first, shrinks each video's placeholders to
    the tokens kept and hands `generate` the encoded videos.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_processor_matches_model()

    def _check_processor_matches_model(self) -> None:
        """A processor built for another F, patch size or vocabulary would feed wrongly sized inputs."""
        check = getattr(self.processor, "check_model_config", None)
        if check is not None:
            check(self.model.config)

    def _sanitize_parameters(self, processor_kwargs=None, generate_kwargs=None, **kwargs):
        check_call_options(self.processor, kwargs)
        options = {name: kwargs.pop(name) for name in PROCESSOR_OPTIONS if name in kwargs}
        if options:
            processor_kwargs = {**(processor_kwargs or {}), **options}
        # generation options given directly (do_sample=..., streamer=...) go to generate, not to the processor
        direct = {name: kwargs.pop(name) for name in list(kwargs) if name in GENERATE_OPTIONS}
        if direct:
            generate_kwargs = {**(generate_kwargs or {}), **direct}
        threshold = kwargs.pop("token_compression_threshold", None)
        preprocess, forward, postprocess = super()._sanitize_parameters(
            processor_kwargs=processor_kwargs, generate_kwargs=generate_kwargs, **kwargs
        )
        if threshold is not None:
            forward["token_compression_threshold"] = check_token_compression_threshold(threshold)
        return preprocess, forward, postprocess

    def _forward(self, model_inputs, generate_kwargs=None, token_compression_threshold=None):
        model_inputs, _ = encode_videos_first(
            self.model, self.processor, model_inputs, token_compression_threshold
        )
        return super()._forward(model_inputs, generate_kwargs)

    def __call__(self, videos=None, text=None, images=None, **kwargs: Any):
        if videos is None and text is None and images is None:
            raise ValueError("pass videos, images or text (a prompt or chat messages)")
        chats, single = self._to_chats(videos, text, images)
        batch_size = kwargs.pop("batch_size", None)
        batch_size = check_batch_size(batch_size if batch_size is not None else (self._batch_size or 1))
        check_call_options(self.processor, kwargs)
        results = []
        for start in range(0, len(chats), batch_size):
            group = chats[start : start + batch_size]
            records = Pipeline.__call__(self, ChatBatch(group), **kwargs)
            per_chat = len(records) // len(group)
            results.extend(records[i * per_chat : (i + 1) * per_chat] for i in range(len(group)))
        return results[0] if single else results

    @staticmethod
    def _to_chats(videos, text, images) -> tuple[list[Chat], bool]:
        """Normalise the call's inputs into chats; `single` when the caller passed one prompt (not a list)."""
        if _looks_like_chat(text):
            validate_conversation(text)
        if _is_chat(text) or _is_chat_list(text):
            if videos is not None or images is not None:
                raise ValueError("with chat messages, put videos and images inside the messages' content")
            return ([Chat(text)], True) if _is_chat(text) else ([Chat(chat) for chat in text], False)
        if text is not None and not isinstance(text, str):
            if not (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)):
                raise TypeError(
                    f"text must be a string, a list of strings or chat messages, got {type(text).__name__}"
                )
        columns = {
            "text": None if text is None else _as_list(text),
            "video": None if videos is None else ([videos] if _is_single_video(videos) else list(videos)),
            "image": None if images is None else _as_list(images),
        }
        given = {name: values for name, values in columns.items() if values is not None}
        count = max(len(values) for values in given.values())
        for name, values in given.items():
            if len(values) not in (1, count):
                raise ValueError(f"got {len(values)} {name} inputs for {count} prompts; pass one or {count}")
        chats = []
        for i in range(count):
            pick = {name: values[i if len(values) > 1 else 0] for name, values in given.items()}
            content = [{"type": kind, kind: pick[kind]} for kind in ("video", "image") if kind in pick]
            if "text" in pick:
                content.append({"type": "text", "text": pick["text"]})
            chats.append(Chat([{"role": "user", "content": content}]))
        single = (
            (text is None or isinstance(text, str))
            and (videos is None or _is_single_video(videos))
            and (images is None or not isinstance(images, (list, tuple)))
        )
        return chats, single

    def preprocess(self, inputs=None, timeout=None, continue_final_message=None, **processing_kwargs):
        if not isinstance(inputs, ChatBatch):
            return super().preprocess(inputs, timeout, continue_final_message, **processing_kwargs)
        messages = [chat.messages for chat in inputs.chats]
        if continue_final_message is None:
            continue_final_message = messages[0][-1]["role"] == "assistant"
        model_inputs = prepare_chat_inputs(
            self.processor,
            messages,
            processing_kwargs.pop("processor_kwargs", None),
            continue_final_message=continue_final_message,
            **processing_kwargs,
        ).to(dtype=self.dtype)
        model_inputs["text"] = inputs.chats
        return model_inputs


def register_pipeline() -> None:
    PIPELINE_REGISTRY.register_pipeline(
        "video-text-to-text",
        pipeline_class=VideoTextToTextPipeline,
        pt_model=AutoModelForImageTextToText,
        type="multimodal",
    )
