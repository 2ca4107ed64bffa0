"""Synthetic datasets on disk (real MP4 files + JSONL in the training format), and the tiny model that learns them."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from ..tiny import TINY_CORPUS, build_tiny_tokenizer, tiny_mavors_config, tiny_processor
from .scenes import (
    COLOURS,
    DIRECTIONS,
    FPS,
    FRAMES_PER_CHUNK,
    NUMBERS,
    PROMPTS,
    SIZE,
    TASKS,
    make_scene,
    write_video,
)

HELDOUT_SEED_OFFSET = 1_000_000  # held-out scenes use seeds from here on; training seeds stay below it

# The demo model's size: about 0.5 M parameters, a 2 MB safetensors file.
VISION_SIZE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    ifa_num_hidden_layers=2,
    ifa_num_attention_heads=4,
    ifa_intermediate_size=128,
    vision_chunk_batch_size=16,
)
TEXT_SIZE = dict(hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4)


def synthetic_corpus() -> str:
    """Every prompt and answer word of the tasks, so each becomes one BPE token."""
    words = [*COLOURS, *DIRECTIONS, *NUMBERS, "square", "moves", "then", "circle", "flash", "A", "a"]
    return "\n".join([TINY_CORPUS, *PROMPTS.values(), " ".join(words), *words])


def synthetic_tokenizer():
    return build_tiny_tokenizer(vocab_size=400, corpus=synthetic_corpus())


def synthetic_config(tokenizer, vision_overrides: dict | None = None, text_overrides: dict | None = None):
    """The tiny Mavors config of the synthetic domain: 56 x 56 frames, 4-frame chunks, 4 tokens per chunk."""
    vision = {**VISION_SIZE, **(vision_overrides or {})}
    text = {**TEXT_SIZE, **(text_overrides or {})}
    return tiny_mavors_config(tokenizer, vision_overrides=vision, text_overrides=text)


def synthetic_processor(tokenizer, max_chunks: int = 8):
    """A processor for the synthetic videos: R_v = SIZE, patch 14, `FRAMES_PER_CHUNK` frames at `FPS`."""
    processor = tiny_processor(tokenizer, fps=FPS, max_chunks=max_chunks)
    assert processor.video_processor.frames_per_chunk == FRAMES_PER_CHUNK and SIZE == 56
    return processor


def scene_record(scene, video_path: str, seed: int) -> dict:
    """A training record (docs/training.md format) with the scene's task, seed and answer kept alongside."""
    prompt = [
        {
            "role": "user",
            "content": [{"type": "video", "path": video_path}, {"type": "text", "text": scene.prompt}],
        }
    ]
    return {
        "messages": prompt + [{"role": "assistant", "content": scene.answer}],
        "task": scene.task,
        "seed": seed,
        "answer": scene.answer,
    }


def write_split(
    root: str | os.PathLike,
    split: str,
    per_task: int,
    tasks=TASKS,
    seed_offset: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Draw `per_task` scenes of every task, write them under `root/split/`, return their records.

    Existing video files are reused (the same seed always draws the same video), so a rerun costs nothing.
    """
    root = Path(root)
    records = []
    jobs = [(task, seed_offset + i) for task in tasks for i in range(per_task)]
    for task, seed in tqdm(jobs, desc=f"writing {split} videos", disable=not progress):
        relative = f"{split}/{task}_{seed}.mp4"
        scene = make_scene(task, seed)
        if not (root / relative).exists():
            write_video(scene.frames, root / relative)
        records.append(scene_record(scene, relative, seed))
    return records


def write_synthetic_dataset(
    root: str | os.PathLike, train_per_task: int, heldout_per_task: int, tasks=TASKS, progress: bool = True
) -> dict[str, list[dict]]:
    """Training and held-out splits (disjoint seeds) of `tasks`, as MP4 files under `root` and record lists."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown synthetic tasks {unknown}; the tasks are {TASKS}")
    return {
        "train": write_split(root, "train", train_per_task, tasks, 0, progress),
        "heldout": write_split(root, "heldout", heldout_per_task, tasks, HELDOUT_SEED_OFFSET, progress),
    }


__all__ = [
    "HELDOUT_SEED_OFFSET",
    "scene_record",
    "synthetic_config",
    "synthetic_processor",
    "synthetic_tokenizer",
    "write_split",
    "write_synthetic_dataset",
]
