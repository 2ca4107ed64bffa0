"""`Trainer` subclasses that use the paper's parameter groups and per-stage schedule.

`MavorsTrainingMixin` changes two hooks of `transformers.Trainer`, and keeps ranks in step through the vision tower
(`rank_sync.synchronize_vision_calls` on the model, and on DPO's reference model):

- `create_optimizer` builds the optimizer (the class `TrainingArguments.optim` selects) over
  `mavors_parameter_groups(...)`: IVE and IFA at `vision_lr_scale` x `args.learning_rate`, no weight decay on
  biases and norms;
- `create_scheduler`, when a `stage` is given, uses that stage's schedule (constant for 1 / 1.5, cosine to 1/10
  for 2 / DPO) with `args.warmup_steps` (a step count, or a fraction of all steps when < 1).

Both hooks are the ones DeepSpeed and FSDP integrations call, so the groups survive `accelerate launch` with any
of the configs in `examples/accelerate/`. At `train()` rank 0 prints `distributed: engine=... world_size=...`
(`distributed.py`), and a launch whose processes would train independent copies is refused. TRL's trainers get
the same mixin in `trl_trainers.py`.
"""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.optimization import get_scheduler
from transformers.utils import logging

from ..cpu_kernels import unfused_cpu_kernels
from .distributed import DistributedReportCallback, check_launch
from .rank_sync import synchronize_vision_calls
from .stages import (
    VISION_LR_SCALE,
    mavors_parameter_groups,
    normalize_stage,
    prepare_stage,
    stage_lr_scheduler,
    stage_processor_kwargs,
)

logger = logging.get_logger(__name__)


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


def _quiet_defaults(args) -> None:
    """Pinned memory only helps copies to an accelerator; without one torch warns on every data loader."""
    if args is not None and getattr(args, "dataloader_pin_memory", False) and not _has_accelerator():
        args.dataloader_pin_memory = False


def _align_special_tokens_quietly(model, processing_class) -> None:
    """Align the model's PAD/BOS/EOS ids with the tokenizer now, as `Trainer` would, without its warning: the
    Mavors checkpoints built from a Qwen2 tokenizer differ from it only by ids the user cannot act on."""
    if model is None or processing_class is None or not hasattr(model, "config"):
        return
    from transformers import trainer_utils

    trainer_logger = logging.get_logger(trainer_utils.__name__)
    level = trainer_logger.level
    trainer_logger.setLevel(logging.ERROR)
    try:
        trainer_utils.align_special_tokens(model, processing_class)
    finally:
        trainer_logger.setLevel(level)


class MavorsTrainingMixin:
    """Mix into a `transformers.Trainer` subclass (first in the bases) to train Mavors the paper's way.

    Extra keyword arguments: `stage` (`"1"`, `"1.5"`, `"2"`, `"dpo"` or `None`) and `vision_lr_scale` (0.1).
    With a stage, the model's `requires_grad` flags are set by `prepare_stage` once the trainer is built
    (after PEFT wrapping, when the trainer does it), and the stage's schedule replaces `args.lr_scheduler_type`.
    Without one, `requires_grad` is left as it is and `args.lr_scheduler_type` is used.
    """

    def __init__(self, *args, stage: str | None = None, vision_lr_scale: float = VISION_LR_SCALE, **kwargs):
        self.stage = None if stage is None else normalize_stage(stage)
        self.vision_lr_scale = vision_lr_scale
        _quiet_defaults(kwargs.get("args", args[1] if len(args) > 1 else None))
        _align_special_tokens_quietly(
            kwargs.get("model", args[0] if args else None),
            kwargs.get("processing_class", kwargs.get("tokenizer")),
        )
        super().__init__(*args, **kwargs)
        check_launch(self.args)  # several launched processes must form one job (distributed.py)
        self.add_callback(DistributedReportCallback(self))
        collator = getattr(self, "data_collator", None)
        if self.stage is not None and isinstance(getattr(collator, "processor_kwargs", None), dict):
            # no sub-image tiling before stage 2 (paper §4), unless the collator sets max_slices itself
            collator.processor_kwargs = stage_processor_kwargs(self.stage, collator.processor_kwargs)
        if self.stage is not None:
            prepare_stage(
                self.model, self.stage, self.args.learning_rate, self.args.weight_decay, self.vision_lr_scale
            )
        # every rank calls the vision tower alike whatever its batch holds (DDP, ZeRO-3, FSDP; rank_sync.py)
        for model in (self.model, getattr(self, "ref_model", None)):
            if isinstance(model, torch.nn.Module):
                synchronize_vision_calls(model)

    def train(self, *args, **kwargs):
        # no-grad forwards during training (the DPO reference, evaluation) compute what the training forward
        # computes: the fused CPU inference kernels stay off for the whole run (cpu_kernels.py)
        with unfused_cpu_kernels():
            return super().train(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        # Our collators read raw columns (messages with media paths) that the model's forward does not name;
        # keeping them makes the default `remove_unused_columns=True` safe (transformers#43598).
        super()._set_signature_columns_if_needed()
        extra = [
            c for c in getattr(self.data_collator, "dataset_columns", ()) if c not in self._signature_columns
        ]
        self._signature_columns = list(self._signature_columns) + extra

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = mavors_parameter_groups(
                opt_model, self.args.learning_rate, self.args.weight_decay, self.vision_lr_scale
            )
            if not groups:
                raise ValueError(
                    "no parameter requires grad: nothing to train (check the stage or PEFT config)"
                )
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model")}
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            logger.info(
                "Optimizer groups: %s",
                ", ".join(f"{g['name']} ({len(g['params'])} tensors, lr={g['lr']:.3g})" for g in groups),
            )
        # the parent finishes the bookkeeping (SageMaker wrapping, 8-bit embeddings) on the existing optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.stage is None or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        warmup = self.args.get_warmup_steps(num_training_steps)
        name, kwargs = stage_lr_scheduler(self.stage, warmup)
        self.lr_scheduler = get_scheduler(
            name,
            optimizer=self.optimizer if optimizer is None else optimizer,
            num_warmup_steps=warmup,
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=kwargs,
        )
        self._created_lr_scheduler = True
        return self.lr_scheduler


class MavorsTrainer(MavorsTrainingMixin, Trainer):
    """`transformers.Trainer` with the paper's optimizer groups and, given `stage=`, its freezing and schedule.

    ```python
    trainer = MavorsTrainer(model=model, args=TrainingArguments(..., learning_rate=1e-5), stage="1.5",
                            train_dataset=dataset, data_collator=MavorsSFTCollator(processor, media_root=root))
    ```
    """


__all__ = ["MavorsTrainingMixin", "MavorsTrainer"]
