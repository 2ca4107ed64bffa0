"""Synthetic video tasks that show a tiny Mavors learning, end to end on a CPU (see `docs/learning.md`).

- `scenes`: seeded procedural videos of coloured shapes and the question each one answers.
- `data`: the splits as real MP4 files + JSONL records; the tiny model's tokenizer, config and processor.
- `training`: training from scratch through `MavorsTrainer` + `MavorsSFTCollator`, and exact-match scoring.
- `niah`: re-exports `transformers_mavors.evaluation.niah` (the needle-in-a-haystack evaluation moved there).
"""

from .data import (
    HELDOUT_SEED_OFFSET,
    synthetic_config,
    synthetic_processor,
    synthetic_tokenizer,
    write_synthetic_dataset,
)
from .scenes import CHANCE, PROMPTS, TASKS, Scene, make_scene, write_video

__all__ = [
    "CHANCE",
    "HELDOUT_SEED_OFFSET",
    "PROMPTS",
    "TASKS",
    "Scene",
    "make_scene",
    "synthetic_config",
    "synthetic_processor",
    "synthetic_tokenizer",
    "write_synthetic_dataset",
    "write_video",
]
