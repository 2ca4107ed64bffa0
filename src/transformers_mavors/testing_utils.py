"""Tiny, offline building blocks for tests, examples and benchmarks.

The builders live in `transformers_mavors.tiny` (production code such as the demo model uses them); this module
re-exports them and adds what only tests need: writing a sample video to disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from .tiny import (
    QWEN_SPECIAL_TOKENS,
    TINY_CORPUS,
    build_tiny_tokenizer,
    make_sample_frames,
    tiny_mavors_config,
    tiny_processor,
    tiny_text_config,
    tiny_vision_config,
)

_CORPUS = TINY_CORPUS  # the name before `tiny.py` existed


def write_sample_video(
    path: str | os.PathLike,
    num_frames: int = 32,
    height: int = 96,
    width: int = 128,
    fps: int = 8,
    codec: str = "libx264",
    seed: int = 0,
) -> Path:
    """Encode `make_sample_frames(...)` to `path` with the package's writer (`media_io.write_video`)."""
    from .media_io import write_video

    return write_video(make_sample_frames(num_frames, height, width, seed), path, fps, codec=codec)


__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "TINY_CORPUS",
    "build_tiny_tokenizer",
    "tiny_vision_config",
    "tiny_text_config",
    "tiny_mavors_config",
    "tiny_processor",
    "make_sample_frames",
    "write_sample_video",
]
