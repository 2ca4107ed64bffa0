"""Tiny, offline Mavors building blocks: a byte-level BPE tokenizer, configs, a processor and sample frames.

The offline demo model (`synthetic/`), the `--tiny-demo` training setup (`training/demo.py`), tests, examples and
benchmarks build on these. Nothing here downloads anything: the tokenizer is a BPE trained on a few sentences,
configs are a few kilobytes and sample frames are drawn with numpy.
"""

from __future__ import annotations

import json

import numpy as np

from .configuration_mavors import MavorsConfig, MavorsVisionConfig

# The Qwen2.5 special tokens the chat format and the processor rely on, in Qwen's order.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The sentences the tiny BPE is trained on, so their words are single tokens.
TINY_CORPUS = """
The video shows a red square moving to the left, then a blue circle appears in the corner.
Describe the video. What colour appears first? How many shapes are there? The answer is three.
A green triangle slides to the right while the background stays black. The square moves up and down.
You are a helpful assistant. user assistant system image video frame chunk second left right up down.
0 1 2 3 4 5 6 7 8 9 10 11 12 one two three four five six seven eight nine ten yes no
"""


def build_tiny_tokenizer(vocab_size: int = 384, corpus: str = TINY_CORPUS):
    """A Qwen2-style byte-level BPE tokenizer with the Qwen2.5 vision special tokens.

    The BPE is trained on `corpus` (a few sentences) so its common words are single tokens; any text still
    encodes, byte by byte. Special tokens come after the BPE vocabulary, so `len(tokenizer)` is at most
    `vocab_size + 7`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus.split("\n"), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    vocab = {"<|endoftext|>": len(model_json["vocab"]), **model_json["vocab"]}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    return tokenizer


def tiny_vision_config(**overrides) -> MavorsVisionConfig:
    """A vision tower small enough to run in milliseconds: 2 ViT layers, 2 IFA layers, 4-frame chunks."""
    kwargs = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
        frames_per_chunk=4,
        ifa_num_hidden_layers=2,
        ifa_num_attention_heads=4,
        ifa_intermediate_size=64,
        vision_chunk_batch_size=4,
    )
    kwargs.update(overrides)
    return MavorsVisionConfig(**kwargs)


def tiny_text_config(vocab_size: int = 400, **overrides) -> dict:
    """Keyword arguments of a 2-layer Qwen2 language model."""
    kwargs = dict(
        model_type="qwen2",
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return kwargs


def tiny_mavors_config(
    tokenizer=None, vision_overrides: dict | None = None, text_overrides: dict | None = None
):
    """A full tiny Mavors config; token ids come from `tokenizer` (default: `build_tiny_tokenizer()`)."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    vocab_size = len(tokenizer) + (-len(tokenizer)) % 8
    return MavorsConfig(
        vision_config=tiny_vision_config(**(vision_overrides or {})).to_dict(),
        text_config=tiny_text_config(vocab_size=vocab_size, **(text_overrides or {})),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
    )


def tiny_processor(tokenizer=None, fps: float = 4.0, max_chunks: int = 8, max_slices: int = 9):
    """A processor matching `tiny_vision_config()`: R_v = 56, patch 14, 4-frame chunks."""
    from .image_processing_mavors import MavorsImageProcessor
    from .processing_mavors import MavorsProcessor
    from .video_processing_mavors import MavorsVideoProcessor

    geometry = dict(image_size=56, patch_size=14)
    return MavorsProcessor(
        image_processor=MavorsImageProcessor(max_slices=max_slices, **geometry),
        video_processor=MavorsVideoProcessor(fps=fps, max_chunks=max_chunks, frames_per_chunk=4, **geometry),
        tokenizer=tokenizer if tokenizer is not None else build_tiny_tokenizer(),
    )


def make_sample_frames(num_frames: int = 32, height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of a coloured square crossing a noisy background from left to right."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    frames = np.repeat(background[None], num_frames, axis=0)
    side = max(4, min(height, width) // 4)
    top = (height - side) // 2
    for t in range(num_frames):
        left = int(round(t * (width - side) / max(1, num_frames - 1)))
        frames[t, top : top + side, left : left + side] = (220, 40, 40)
    return frames


__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "TINY_CORPUS",
    "build_tiny_tokenizer",
    "tiny_vision_config",
    "tiny_text_config",
    "tiny_mavors_config",
    "tiny_processor",
    "make_sample_frames",
]
