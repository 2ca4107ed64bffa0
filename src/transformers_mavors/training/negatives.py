"""Video-captioning preference pairs, as in the paper's DPO data (appendix A).

"Captions generated from the original video serve as positive examples. Negative examples are created by
captioning the video after segmenting it into four equal parts and shuffling their temporal order."

`shuffle_quarters` does the cut and shuffle on frames, `write_shuffled_quarters` on a video file (PyAV in and
out), and `build_video_caption_pairs` turns a list of videos into preference records (JSONL-ready, the format of
`data.py`) given a captioning function, e.g. `make_captioner(model, processor)`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..generation import answer_chats
from ..media_io import read_video
from ..media_io import write_video as write_video_frames  # the package's one writer, under its old name
from .data import resolve_media_path

logger = logging.get_logger(__name__)

NUM_PARTS = 4
DEFAULT_CAPTION_PROMPT = "Describe the video in detail."


def quarter_order(seed: int | random.Random | None = None) -> list[int]:
    """A random order of the four parts that is never the original order `[0, 1, 2, 3]`."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    order = list(range(NUM_PARTS))
    while order == sorted(order):
        rng.shuffle(order)
    return order


def shuffle_quarters(
    frames: np.ndarray | torch.Tensor | Sequence[Any],
    order: Sequence[int] | None = None,
    seed: int | random.Random | None = None,
) -> tuple[np.ndarray | torch.Tensor | list, list[int]]:
    """Cut `frames` (time first) into four equal parts and concatenate them in `order` (random if not given).

    With T frames each part holds T // 4; the last T mod 4 frames are dropped so the parts are exactly equal.
    Returns the shuffled frames (same type as the input: array, tensor or list) and the order used.
    """
    num_frames = len(frames)
    if num_frames < NUM_PARTS:
        raise ValueError(
            f"a video needs at least {NUM_PARTS} frames to cut into four parts, got {num_frames}"
        )
    order = quarter_order(seed) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(NUM_PARTS)):
        raise ValueError(f"order must be a permutation of {list(range(NUM_PARTS))}, got {order}")
    part = num_frames // NUM_PARTS
    indices = [i * part + offset for i in order for offset in range(part)]
    if isinstance(frames, np.ndarray):
        return frames[indices], order
    if isinstance(frames, torch.Tensor):
        return frames[torch.tensor(indices)], order
    return [frames[i] for i in indices], order


def read_video_frames(path: str | os.PathLike) -> tuple[np.ndarray, Fraction]:
    """All frames of a video file as `(T, H, W, 3)` uint8 RGB, and its average frame rate (`media_io.read_video`)."""
    return read_video(path)


def write_shuffled_quarters(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    order: Sequence[int] | None = None,
    seed: int | random.Random | None = None,
    codec: str = "libx264",
) -> list[int]:
    """Decode `source`, shuffle its four quarters (`shuffle_quarters`) and encode to `destination` at the same
    frame rate; returns the order of the quarters. Audio is not copied."""
    frames, rate = read_video_frames(source)
    shuffled, order = shuffle_quarters(frames, order, seed)
    write_video_frames(shuffled, destination, rate, codec)
    return order


def build_video_caption_pairs(
    videos: Sequence[str | os.PathLike],
    caption_fn: Callable[[str], str],
    output_dir: str | os.PathLike,
    media_root: str | os.PathLike | None = None,
    prompt: str = DEFAULT_CAPTION_PROMPT,
    chosen_captions: Sequence[str] | None = None,
    seed: int = 0,
    codec: str = "libx264",
) -> list[dict]:
    """Preference records for video captioning (appendix A), one per video.

    For each video (a path, relative to `media_root` if given) the four-part shuffled copy is written under
    `output_dir`; `chosen` is `caption_fn(original)` (or `chosen_captions[i]`), `rejected` is
    `caption_fn(shuffled copy)`. Records follow `data.py`'s preference format, with the original video in the
    prompt, and are ready for `write_jsonl` / `load_mavors_dataset`. The shuffled copy's path (relative to
    `media_root` when it lies inside it) and the order of the quarters are kept as `rejected_video` and
    `quarter_order` for inspection. A pair whose captions are equal (up to case and white space) teaches nothing:
    it is skipped, its shuffled copy removed, and the skipped pairs are counted in one warning.
    """
    if chosen_captions is not None and len(chosen_captions) != len(videos):
        raise ValueError(f"got {len(chosen_captions)} chosen captions for {len(videos)} videos")
    rng = random.Random(seed)
    output_dir = Path(output_dir)
    root = None if media_root is None else Path(media_root).resolve()
    records, skipped = [], []
    for index, video in enumerate(
        tqdm(videos, desc="Shuffling and captioning videos", disable=len(videos) < 8)
    ):
        original = resolve_media_path(os.fspath(video), media_root)
        shuffled = output_dir / f"{index:06d}_{Path(original).stem}_shuffled.mp4"
        order = write_shuffled_quarters(original, shuffled, seed=rng, codec=codec)
        stored = shuffled.resolve()
        if root is not None and stored.is_relative_to(root):
            stored = stored.relative_to(root)
        chosen = chosen_captions[index] if chosen_captions is not None else caption_fn(original)
        rejected = caption_fn(str(shuffled))
        if _same_caption(chosen, rejected):
            # no preference to learn: DPO's loss is constant on such a pair. The shuffled copy is ours to remove.
            skipped.append(os.fspath(video))
            shuffled.unlink(missing_ok=True)
            continue
        records.append(
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "video", "path": os.fspath(video)},
                            {"type": "text", "text": prompt},
                        ],
                    }
                ],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "rejected_video": str(stored),
                "quarter_order": order,
            }
        )
    if skipped:
        logger.warning(
            "skipped %d of %d caption pairs whose chosen and rejected captions are equal (the captioner ignored the "
            "shuffle), e.g. %s",
            len(skipped),
            len(videos),
            ", ".join(skipped[:3]),
        )
    return records


def _same_caption(chosen: str, rejected: str) -> bool:
    """Equal up to case and white space."""
    return " ".join(str(chosen).split()).lower() == " ".join(str(rejected).split()).lower()


def make_captioner(
    model, processor, prompt: str = DEFAULT_CAPTION_PROMPT, max_new_tokens: int = 256, **generate_kwargs: Any
) -> Callable[[str], str]:
    """`caption_fn(video_path) -> str` that asks `model` to describe a video (greedy unless told otherwise)."""

    def caption(video: str) -> str:
        chat = [
            {"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": prompt}]}
        ]
        (answer,) = answer_chats(model, processor, [chat], max_new_tokens=max_new_tokens, **generate_kwargs)
        return answer.strip()

    return caption


__all__ = [
    "NUM_PARTS",
    "DEFAULT_CAPTION_PROMPT",
    "quarter_order",
    "shuffle_quarters",
    "read_video_frames",
    "write_video_frames",
    "write_shuffled_quarters",
    "build_video_caption_pairs",
    "make_captioner",
]
