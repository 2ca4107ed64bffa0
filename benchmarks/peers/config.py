"""What defines one benchmark run: the models compared, the video's frame rate and chunk length, the token ids."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODELS = ("mavors", "qwen2_5_vl", "video_llama_3")
FPS = 2.0  # frame rate of the benchmark video, given to every model
FRAMES_PER_CHUNK = 16  # Mavors' F

# Qwen2.5 special tokens (ids of the real vocabulary, which every config keeps)
IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = (
    151644,
    151645,
    151652,
    151653,
    151655,
    151656,
)


@dataclass
class Setup:
    """Everything that defines one benchmark run; written to the JSON."""

    device: str
    dtype: str
    llm: str
    depth_divisor: int
    width: int
    height: int
    frames: list[int]
    repeats: int
    decode_tokens: int
    tiny: bool = False
    video_llama_3_all_logits: bool = False
    depths: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)
