"""A tiny, offline training setup for the example scripts' `--tiny-demo` flag and for smoke tests.

It writes small synthetic videos of a square crossing the frame (to the right or to the left), SFT and
preference JSONL files in the documented format, and returns a tiny random Mavors model with a matching
processor. Nothing is downloaded; a demo run takes seconds on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..tiny import build_tiny_tokenizer, make_sample_frames, tiny_mavors_config, tiny_processor
from .data import write_jsonl
from .negatives import write_video_frames

CAPTIONS = {"right": "The square moves to the right.", "left": "The square moves to the left."}
QUESTION = "Where does the square go?"


def write_demo_data(root: str | os.PathLike, num_videos: int = 8) -> dict[str, Path]:
    """Videos under `root/videos`, their list `root/videos.txt`, and `root/sft.jsonl`, `root/dpo.jsonl` (paths
    relative to `root`). In a multi-process run, call it on the main process first (existing videos are kept)."""
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    sft, dpo = [], []
    for i in range(num_videos):
        direction = "right" if i % 2 == 0 else "left"
        frames = make_sample_frames(16, height=56, width=84, seed=i)
        if direction == "left":
            frames = frames[::-1].copy()
        path = f"videos/clip{i}.mp4"
        if not (root / path).exists():  # other ranks of a multi-process demo reuse rank 0's files
            write_video_frames(frames, root / path, fps=8)
        prompt = [
            {"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": QUESTION}]}
        ]
        sft.append({"messages": prompt + [{"role": "assistant", "content": CAPTIONS[direction]}]})
        dpo.append({"prompt": prompt, "chosen": CAPTIONS[direction], "rejected": "The square jumps around."})
    video_list = root / "videos.txt"
    video_list.write_text("\n".join(f"videos/clip{i}.mp4" for i in range(num_videos)) + "\n")
    return {
        "media_root": root,
        "sft": write_jsonl(sft, root / "sft.jsonl"),
        "dpo": write_jsonl(dpo, root / "dpo.jsonl"),
        "videos": video_list,
    }


def tiny_demo_model_and_processor(seed: int = 0):
    """A tiny random `MavorsForConditionalGeneration` (seeded) and a `MavorsProcessor` matching it."""
    import torch

    from ..modeling_mavors import MavorsForConditionalGeneration

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    # `_from_config` (what `AutoModel.from_config` calls) rather than the constructor: under a ZeRO-3 launch with
    # `zero3_init_flag` it builds the model straight into shards (`deepspeed.zero.Init`), as `from_pretrained` does
    model = MavorsForConditionalGeneration._from_config(tiny_mavors_config(tokenizer))
    return model, tiny_processor(tokenizer)


__all__ = ["write_demo_data", "tiny_demo_model_and_processor"]
