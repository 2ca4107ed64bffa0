"""From chat messages to answers: the one path the pipeline, `mavors generate`, the caption negatives of
`training/negatives.py` and the synthetic evaluation take.

Three steps, each a function:

1. `prepare_chat_inputs`: the processor's chat template over a batch of chats, tokenized and left-padded (the
   padding side is a processor-call argument; nothing on the tokenizer is changed);
2. `encode_videos_first`: token compression (paper §5.4) when it is in force: encode the videos and shrink their
   placeholders to the tokens kept;
3. `generate_answers`: `model.generate` and the decoded new text of each chat.

`answer_chats` runs all three. The pipeline runs step 1 in `preprocess` and step 2 in `_forward`, and leaves
generation and decoding to transformers' `ImageTextToTextPipeline`.
"""

from __future__ import annotations

from typing import Any

import torch


def prepare_chat_inputs(
    processor,
    chats: list[list[dict]],
    processor_kwargs: dict[str, Any] | None = None,
    continue_final_message: bool = False,
    **template_kwargs: Any,
):
    """Processor inputs (`BatchFeature` of tensors) for a batch of chats, left-padded for generation.

    `chats` is a list of conversations (lists of `{"role", "content"}` messages whose content blocks may carry
    `{"type": "video", "path" | "video": ...}` and `{"type": "image", ...}`). `processor_kwargs` reach the
    processor (`fps`, `max_chunks`, ...); `padding=True` and `padding_side="left"` are the defaults there.
    `continue_final_message=True` continues the last (assistant) message instead of opening a new turn.
    """
    processor_kwargs = dict(processor_kwargs or {})
    processor_kwargs.setdefault("padding", True)
    processor_kwargs.setdefault("padding_side", "left")
    return processor.apply_chat_template(
        chats,
        continue_final_message=continue_final_message,
        add_generation_prompt=not continue_final_message,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs=processor_kwargs,
        **template_kwargs,
    )


def encode_videos_first(model, processor, inputs, threshold: float | None = None):
    """The token-compression step: encode the videos, shrink their placeholders.

    `threshold` `None` means the checkpoint's `vision_config.token_compression_threshold`. When compression is in
    force and `inputs` (a processor output) hold videos, returns inputs whose video placeholders match the tokens
    kept, without the video pixels and with `mm_encoder_outputs={"video": ...}` for `generate`; otherwise `inputs`
    unchanged (so a second call is a no-op). Also returns the threshold in force (`None`: off).
    """
    if threshold is None:
        threshold = getattr(model.config.vision_config, "token_compression_threshold", None)
    if threshold is None or inputs.get("pixel_values_videos") is None:
        return inputs, threshold
    video = model.get_video_features(
        inputs["pixel_values_videos"],
        inputs["video_grid_thw"],
        inputs.get("video_chunk_positions"),
        token_compression_threshold=threshold,
        return_dict=True,
    )
    inputs = processor.resize_video_placeholders(inputs, video.token_counts)
    inputs["mm_encoder_outputs"] = {"video": video}
    return inputs, threshold


@torch.no_grad()
def generate_answers(
    model, processor, inputs, token_compression_threshold: float | None = None, **generate_kwargs: Any
) -> list[str]:
    """`model.generate` on processor `inputs` (moved to the model's device) and the decoded new text per row.

    The model runs in eval mode for the call and goes back to its previous mode afterwards. Special tokens are
    skipped in the decoded text; whitespace is kept.
    """
    inputs = inputs.to(model.device)
    was_training = model.training
    model.eval()
    try:
        inputs, _ = encode_videos_first(model, processor, inputs, token_compression_threshold)
        output = model.generate(**inputs, **generate_kwargs)
    finally:
        model.train(was_training)
    return processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def answer_chats(
    model,
    processor,
    chats: list[list[dict]],
    processor_kwargs: dict[str, Any] | None = None,
    token_compression_threshold: float | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """The answer `model` generates to each chat (one left-padded batch): `prepare_chat_inputs`, then
    `generate_answers` (which compresses video tokens when a threshold is in force)."""
    inputs = prepare_chat_inputs(processor, chats, processor_kwargs)
    return generate_answers(model, processor, inputs, token_compression_threshold, **generate_kwargs)


__all__ = ["prepare_chat_inputs", "encode_videos_first", "generate_answers", "answer_chats"]
