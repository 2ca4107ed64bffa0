"""Train a tiny Mavors from scratch on the synthetic tasks, through the real training path, and score it.

The path is the one a user's fine-tuning takes: records in the JSONL format, `load_mavors_dataset`,
`MavorsSFTCollator` (which decodes the MP4 files of each batch with `MavorsProcessor`), and `MavorsTrainer` with
the paper's parameter groups. The paper's stages are compressed into one: a model trained from scratch has no
pretrained part to protect, so everything trains from the first step (stage 2's freezing, which is none), and
the vision side learns *faster* than the LLM (`vision_lr_scale=3`) instead of at the paper's tenth: a random LLM
that learns quickly settles on each task's answer prior before any video feature is worth reading (measured in
docs/learning.md).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments
from transformers.utils import logging

from ..generation import answer_chats
from ..modeling_mavors import MavorsForConditionalGeneration
from ..training import MavorsSFTCollator, MavorsTrainer, load_mavors_dataset
from .data import synthetic_config, synthetic_processor, synthetic_tokenizer, write_synthetic_dataset
from .scenes import TASKS

logger = logging.get_logger(__name__)


@dataclass
class SyntheticRun:
    """What `train_synthetic` returns: the model, its processor, the loss log and the held-out scores."""

    model: MavorsForConditionalGeneration
    processor: object
    log_history: list[dict]
    train_seconds: float
    accuracy: dict[str, float] = field(default_factory=dict)
    num_heldout: dict[str, int] = field(default_factory=dict)


class _HeldoutAccuracy(TrainerCallback):
    """Scores greedy answers on held-out records every `every` steps (the learning curve's accuracy points)."""

    def __init__(self, processor, records, media_root, every: int, batch_size: int):
        self.processor, self.records, self.media_root = processor, records, media_root
        self.every, self.batch_size = every, batch_size
        self.points: list[dict] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            scores, _ = evaluate_synthetic(
                model, self.processor, self.records, self.media_root, self.batch_size
            )
            # greedy_answers puts the model back in training mode itself
            self.points.append({"step": state.global_step, **{f"accuracy/{k}": v for k, v in scores.items()}})


def normalize_answer(text: str) -> str:
    return " ".join(text.strip().lower().rstrip(".").split())


def greedy_answers(
    model, processor, questions, videos, max_new_tokens: int = 24, **processor_kwargs
) -> list[str]:
    """Greedy answers to one batch of questions, each about its video (left-padded; eval mode for the call)."""
    chats = [
        [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": question}]}]
        for question, video in zip(questions, videos, strict=True)
    ]
    return answer_chats(
        model, processor, chats, processor_kwargs, max_new_tokens=max_new_tokens, do_sample=False
    )


def generate_answers(
    model, processor, records, media_root, batch_size: int = 16, max_new_tokens: int = 24, **processor_kwargs
):
    """Greedy answers to the records' user turns, `batch_size` records at a time."""
    from ..training.data import resolve_media_path

    answers = []
    for start in range(0, len(records), batch_size):
        questions, videos = [], []
        for record in records[start : start + batch_size]:
            content = record["messages"][0]["content"]
            video = next(block for block in content if block["type"] == "video")
            videos.append(str(resolve_media_path(video["path"], media_root)))
            questions.append(next(block["text"] for block in content if block["type"] == "text"))
        answers += greedy_answers(model, processor, questions, videos, max_new_tokens, **processor_kwargs)
    return answers


def evaluate_synthetic(model, processor, records, media_root, batch_size: int = 16, **processor_kwargs):
    """Exact-match accuracy per task (answers compared case- and final-period-insensitively).

    Returns `(accuracy per task, number of records per task)`.
    """
    answers = generate_answers(model, processor, records, media_root, batch_size, **processor_kwargs)
    hits, counts = defaultdict(int), defaultdict(int)
    for record, answer in zip(records, answers, strict=True):
        counts[record["task"]] += 1
        hits[record["task"]] += normalize_answer(answer) == normalize_answer(record["answer"])
    return {task: hits[task] / counts[task] for task in counts}, dict(counts)


def train_synthetic(
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    tasks=TASKS,
    train_per_task: int = 400,
    heldout_per_task: int = 50,
    max_steps: int = 1500,
    batch_size: int = 8,
    learning_rate: float = 3e-4,
    vision_lr_scale: float = 3.0,
    warmup_steps: int = 50,
    seed: int = 0,
    vision_overrides: dict | None = None,
    text_overrides: dict | None = None,
    accuracy_every: int = 0,
    curve_per_task: int | None = None,
    repeat: dict[str, int] | None = None,
    evaluate: bool = True,
    progress: bool = True,
) -> SyntheticRun:
    """Write (or reuse) the synthetic data, train a tiny Mavors from scratch on it, score it on the held-out split.

    `vision_overrides` / `text_overrides` change the model (e.g. `{"ifa_num_hidden_layers": 0}` for an ablation).
    `learning_rate` is the LLM's and projector's; the IVE and IFA learn at `vision_lr_scale` times it (from
    scratch the vision side must learn faster than the LLM, see docs/learning.md). The held-out accuracy is also
    measured every `accuracy_every` steps when > 0 (the learning curve), on the first `curve_per_task` held-out
    records of each task (default: all). `repeat` lists training records of some tasks several times (e.g.
    `{"motion": 3}`), so the tasks that need more steps get more of them.
    """
    repeat = repeat or {}
    unknown = sorted(set(repeat) - set(tasks))
    if unknown or any(not isinstance(k, int) or k < 1 for k in repeat.values()):
        raise ValueError(f"repeat must map trained tasks {tuple(tasks)} to counts >= 1, got {repeat}")
    output_dir = Path(output_dir)
    data_dir = Path(data_dir) if data_dir is not None else output_dir / "data"
    splits = write_synthetic_dataset(data_dir, train_per_task, heldout_per_task, tasks, progress)

    torch.manual_seed(seed)
    tokenizer = synthetic_tokenizer()
    processor = synthetic_processor(tokenizer)
    model = MavorsForConditionalGeneration(synthetic_config(tokenizer, vision_overrides, text_overrides))
    # answers end at <|im_end|>: generation must stop there (a from-scratch model has no other stop token)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    logger.info("synthetic model: %.2f M parameters", sum(p.numel() for p in model.parameters()) / 1e6)

    train_records = [
        {"messages": r["messages"]} for r in splits["train"] for _ in range(repeat.get(r["task"], 1))
    ]
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        weight_decay=0.01,
        logging_steps=max(1, max_steps // 100),
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
    )
    callbacks = []
    if accuracy_every:
        curve_records = splits["heldout"]
        if curve_per_task is not None:
            by_task = defaultdict(list)
            for record in curve_records:
                by_task[record["task"]].append(record)
            curve_records = [r for records in by_task.values() for r in records[:curve_per_task]]
        callbacks.append(_HeldoutAccuracy(processor, curve_records, data_dir, accuracy_every, 32))
    trainer = MavorsTrainer(
        model=model,
        args=args,
        stage="2",
        vision_lr_scale=vision_lr_scale,
        train_dataset=load_mavors_dataset(train_records),
        data_collator=MavorsSFTCollator(processor, media_root=data_dir),
        callbacks=callbacks,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    log_history = list(trainer.state.log_history)
    for callback in callbacks:
        log_history += callback.points
    model.eval()
    run = SyntheticRun(model, processor, log_history, seconds)
    if evaluate:
        run.accuracy, run.num_heldout = evaluate_synthetic(model, processor, splits["heldout"], data_dir, 32)
    return run


def loss_curve(log_history: list[dict]) -> tuple[list[int], list[float]]:
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and math.isfinite(h["loss"])]
    return [s for s, _ in points], [v for _, v in points]


__all__ = [
    "SyntheticRun",
    "evaluate_synthetic",
    "generate_answers",
    "greedy_answers",
    "loss_curve",
    "normalize_answer",
    "train_synthetic",
]
