"""Each model's tensors and prompt for the same frames, built the way its own processor would.

Every builder takes `(T, H, W, 3)` uint8 frames and returns `(inputs for generate, visual tokens)`. The prompt
around the video is the same ChatML stand-in for all three.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from transformers_mavors import MavorsVideoProcessor, num_visual_tokens

from .config import FPS, FRAMES_PER_CHUNK, IM_END, IM_START, VIDEO_PAD, VISION_END, VISION_START

# Normalisation constants of each processor (OpenAI CLIP for Qwen, 0.5/0.5 for SigLIP-based ones)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

# ChatML around the video: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" and
# "Describe what happens in the video.<|im_end|>\n<|im_start|>assistant\n"; stand-in ids of the same lengths.
_TEXT = np.random.default_rng(1234).integers(1000, 150000, size=64).tolist()
PROMPT_BEFORE = [IM_START, *_TEXT[:4], IM_END, _TEXT[4], IM_START, *_TEXT[5:7]]
PROMPT_AFTER = [*_TEXT[10:17], IM_END, _TEXT[17], IM_START, *_TEXT[18:20]]


def _prompt(vision_ids: list[int]) -> dict:
    ids = torch.tensor([PROMPT_BEFORE + [VISION_START] + vision_ids + [VISION_END] + PROMPT_AFTER])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _normalised(frames: np.ndarray, mean, std) -> torch.Tensor:
    """`(T, H, W, 3)` uint8 -> `(1, T, 3, H, W)` float, rescaled to [0, 1] and normalised."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)
    video = (video - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return video[None]


def patchify(video: torch.Tensor, temporal_patch: int, patch: int = 14, merge: int = 2):
    """The Qwen2-VL / VideoLLaMA3 video processors' `patchify`: `(1, T, C, H, W)` -> rows, `(t, h, w)` grid.

    Rows are ordered by temporal patch, then 2x2 merge block, then position inside the block; each holds
    `(C, temporal_patch, p, p)` values. A frame count not divisible by `temporal_patch` repeats the last frame.
    """
    batch, frames, channels, height, width = video.shape
    if pad := -frames % temporal_patch:
        video = torch.cat((video, video[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
        frames += pad
    grid_t, grid_h, grid_w = frames // temporal_patch, height // patch, width // patch
    patches = video.view(
        batch, grid_t, temporal_patch, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch
    ).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    rows = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch * patch * patch)
    return rows, torch.tensor([[grid_t, grid_h, grid_w]])


def mavors_inputs(frames: np.ndarray) -> tuple[dict, int]:
    """`MavorsVideoProcessor` at R_v = sqrt(W*H) (frames keep their size) + the placeholder expansion."""
    _, height, width, _ = frames.shape
    processor = MavorsVideoProcessor(
        fps=FPS,
        frames_per_chunk=FRAMES_PER_CHUNK,
        max_chunks=math.ceil(len(frames) / FRAMES_PER_CHUNK),
        image_size=round(math.sqrt(width * height)),
        patch_size=14,
    )
    video = processor(frames, return_tensors="pt")
    grid = video["video_grid_thw"][0].tolist()
    if (grid[1] * 14, grid[2] * 14) != (height, width):
        raise ValueError(
            f"Mavors' processor resized {width}x{height} frames to {grid[2] * 14}x{grid[1] * 14}"
        )
    tokens = num_visual_tokens(grid)
    return {**_prompt([VIDEO_PAD] * tokens), **video}, tokens


def qwen2_5_vl_inputs(frames: np.ndarray) -> tuple[dict, int]:
    """Qwen2.5-VL's layout: temporal patch 2, CLIP normalisation, tokens = t*h*w/4, M-RoPE metadata."""
    rows, grid = patchify(_normalised(frames, CLIP_MEAN, CLIP_STD), temporal_patch=2)
    tokens = int(grid.prod()) // 4
    inputs = _prompt([VIDEO_PAD] * tokens)
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == VIDEO_PAD).int() * 2  # 0 text, 2 video
    inputs.update(pixel_values_videos=rows, video_grid_thw=grid, second_per_grid_ts=torch.tensor([2 / FPS]))
    return inputs, tokens


def video_llama_3_timestamp_tokens(seconds: float) -> int:
    """Tokens Qwen2.5's tokenizer makes of VideoLLaMA3's per-frame prefix `f"Time {t:.1f}s:"`.

    "Time", " ", one token per digit, ".", the tenths digit, "s", ":" (Qwen2's pre-tokenizer splits digits).
    """
    return 6 + len(str(int(seconds)))


def video_llama_3_inputs(frames: np.ndarray) -> tuple[dict, int]:
    """VideoLLaMA3's layout: per-frame patches (temporal patch 1), merge size 2 for video, 0.5/0.5 normalisation,
    h*w/4 tokens per frame, each frame's tokens after "Time t.ts:" and frames joined by ",". No token pruning."""
    rows, grid = patchify(_normalised(frames, HALF, HALF), temporal_patch=1)
    per_frame = int(grid[0, 1] * grid[0, 2]) // 4
    text_token = _TEXT[30]
    vision_ids: list[int] = []
    for index in range(len(frames)):
        if index:
            vision_ids.append(text_token)  # ","
        vision_ids += [text_token] * video_llama_3_timestamp_tokens(index / FPS) + [VIDEO_PAD] * per_frame
    inputs = _prompt(vision_ids)
    inputs.update(
        pixel_values_videos=rows,
        video_grid_thw=grid,
        video_merge_sizes=torch.tensor([2]),
        video_compression_mask=torch.ones(per_frame * len(frames), dtype=torch.bool),
    )
    return inputs, per_frame * len(frames)


INPUT_BUILDERS = {
    "mavors": mavors_inputs,
    "qwen2_5_vl": qwen2_5_vl_inputs,
    "video_llama_3": video_llama_3_inputs,
}
