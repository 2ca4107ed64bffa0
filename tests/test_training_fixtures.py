"""Shared helpers of the training tests (no tests here): tiny models, hand-built batches, a tiny processor.

Hand-built batches follow the processor's contract (SPEC §7) without decoding anything, so stage, optimizer,
LoRA and multi-process tests do not depend on the processor; the collator tests use the real one.
"""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from transformers_mavors import MavorsForConditionalGeneration, num_visual_tokens
from transformers_mavors.testing_utils import build_tiny_tokenizer, tiny_mavors_config

PATCH = 14
FRAMES = 4  # tiny_vision_config's frames_per_chunk
ANSWERS = ("left", "right")

_TOKENIZER = None


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and with two OpenMP threads on a two-core machine shared with other
    work, a step can take 100x longer (threads spin waiting for each other). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = build_tiny_tokenizer()
    return _TOKENIZER


def tiny_model(seed: int = 0, **config_kwargs) -> MavorsForConditionalGeneration:
    torch.manual_seed(seed)
    return MavorsForConditionalGeneration(tiny_mavors_config(tokenizer(), **config_kwargs))


def training_args(tmp_path, **overrides) -> TrainingArguments:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def chatml(prompt: str, media: str, answer: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{media}{prompt}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


def video_item(seed: int, chunks: int = 2, h: int = 4, w: int = 4):
    """Packed random video whose content says which answer is right (sign of its mean), and its placeholders."""
    generator = torch.Generator().manual_seed(seed)
    sign = 1.0 if seed % 2 else -1.0
    rows = torch.randn(chunks * h * w, 3 * FRAMES * PATCH * PATCH, generator=generator) * 0.5 + sign
    grid = torch.tensor([[chunks, h, w]])
    text = "<|vision_start|>" + "<|video_pad|>" * num_visual_tokens((chunks, h, w)) + "<|vision_end|>"
    return rows, grid, text, ANSWERS[seed % 2]


def image_item(seed: int, h: int = 4, w: int = 4):
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(h * w, 3 * PATCH * PATCH, generator=generator)
    text = "<|vision_start|>" + "<|image_pad|>" * num_visual_tokens((1, h, w)) + "<|vision_end|>"
    return rows, torch.tensor([[1, h, w]]), text


def handmade_batch(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Right-padded batch from `{"kind": "video" | "image" | "text", "seed": int}` examples, labels on the
    assistant reply only (the layout `MavorsSFTCollator` produces)."""
    tok = tokenizer()
    texts, videos, video_grids, images, image_grids = [], [], [], [], []
    for example in examples:
        kind, seed = example["kind"], int(example["seed"])
        media, answer = "", ANSWERS[seed % 2]
        if kind == "video":
            rows, grid, media, answer = video_item(seed, chunks=int(example.get("chunks", 2)))
            videos.append(rows)
            video_grids.append(grid)
        elif kind == "image":
            rows, grid, media = image_item(seed)
            images.append(rows)
            image_grids.append(grid)
        elif kind != "text":
            raise ValueError(kind)
        texts.append(chatml("Where does the square go?", media, answer))
    encoded = tok(texts, padding=True, padding_side="right", return_tensors="pt")
    from transformers_mavors.training.data import SpecialTokenIds, build_sft_labels

    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if videos:
        batch["pixel_values_videos"] = torch.cat(videos)
        batch["video_grid_thw"] = torch.cat(video_grids)
    if images:
        batch["pixel_values"] = torch.cat(images)
        batch["image_grid_thw"] = torch.cat(image_grids)
    batch["labels"] = build_sft_labels(batch, SpecialTokenIds.from_processor(_TokenizerHolder(tok)))
    return batch


class _TokenizerHolder:
    """Just enough of a processor for `SpecialTokenIds.from_processor`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


class HandmadeCollator:
    """`handmade_batch` as a collator; `dataset_columns` tells `MavorsTrainer` which raw columns to keep."""

    dataset_columns = ("kind", "seed")

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return handmade_batch(examples)


handmade_collator = HandmadeCollator()


def handmade_dataset(num: int, kinds=("video", "text")) -> list[dict]:
    return [{"kind": kinds[i % len(kinds)], "seed": i} for i in range(num)]


def tiny_processor(**kwargs):
    """The package's `MavorsProcessor` matching `tiny_mavors_config` (R_v 56, patch 14, 4-frame chunks), with
    the same tokenizer as `tiny_model`."""
    from transformers_mavors.testing_utils import tiny_processor as build

    return build(tokenizer(), **kwargs)


CAPTIONS = {"right": "The square moves to the right.", "left": "The square moves to the left."}
QUESTION = "Where does the square go?"


def write_direction_videos(root, num: int = 8, num_frames: int = 16, fps: int = 8) -> list[tuple[str, str]]:
    """`num` small videos of a square crossing the frame, alternately to the right and to the left.

    Returns `(relative path, direction)` pairs; files are written under `root`.
    """
    from transformers_mavors.testing_utils import make_sample_frames
    from transformers_mavors.training.negatives import write_video_frames

    videos = []
    for i in range(num):
        direction = "right" if i % 2 == 0 else "left"
        frames = make_sample_frames(num_frames, height=56, width=84, seed=i)
        if direction == "left":
            frames = frames[::-1].copy()
        write_video_frames(frames, root / f"clip{i}.mp4", fps)
        videos.append((f"clip{i}.mp4", direction))
    return videos


def video_prompt(path: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "video", "path": path}, {"type": "text", "text": QUESTION}]}
    ]


def sft_records(videos) -> list[dict]:
    return [
        {"messages": video_prompt(path) + [{"role": "assistant", "content": CAPTIONS[direction]}]}
        for path, direction in videos
    ]


def preference_records(videos) -> list[dict]:
    other = {"right": "left", "left": "right"}
    return [
        {"prompt": video_prompt(path), "chosen": CAPTIONS[direction], "rejected": CAPTIONS[other[direction]]}
        for path, direction in videos
    ]
