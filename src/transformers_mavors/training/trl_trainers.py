"""TRL's `SFTTrainer` and `DPOTrainer` for Mavors: video and image data, the paper's optimizer groups.

TRL 1.16 only recognises image datasets and its collators never pass `videos=` to a processor. These
subclasses change nothing in TRL's training step or loss; they only

- default the data collator to `MavorsSFTCollator` / `MavorsPreferenceCollator` (built from `processing_class`,
  `media_root` and `args.max_length`);
- give the dataset an empty `"images"` column when it has none, which is how TRL decides to leave
  multimodal columns to the collator instead of tokenizing them up front;
- (DPO) build the reference model as a frozen copy of the policy when none is given and no PEFT adapter is
  used, since TRL would otherwise reload it from `config._name_or_path`, which an in-memory model lacks;
- leave `ddp_find_unused_parameters` off unless asked: TRL turns it on for every vision-language model because a
  text-only batch usually leaves the vision tower without gradients, but Mavors runs the tower on every batch
  (zero-weighted dummy items), so DDP can skip the extra graph traversal;
- add `MavorsTrainingMixin` (parameter groups, `stage=` freezing and schedule).
"""

from __future__ import annotations

import copy
import os

from torch import nn
from transformers import ProcessorMixin
from transformers.utils import logging
from trl import DPOTrainer, SFTTrainer

from .data import MavorsPreferenceCollator, MavorsSFTCollator
from .distributed import is_zero3_partitioned
from .trainer import MavorsTrainingMixin

logger = logging.get_logger(__name__)


def with_images_column(dataset):
    """`dataset` with an empty `"images"` column if it has neither `"image"` nor `"images"`."""
    if dataset is None:
        return None
    if isinstance(dataset, dict):
        return {key: with_images_column(value) for key, value in dataset.items()}
    sample = next(iter(dataset))
    if "images" in sample or "image" in sample:
        return dataset
    if hasattr(dataset, "map"):
        return dataset.map(lambda _: {"images": []})
    raise TypeError(
        f"cannot add an 'images' column to a {type(dataset).__name__}; use a `datasets.Dataset` or add the column"
    )


def _copy_zero3_partitioned(model: nn.Module) -> nn.Module:
    """A copy of a model built under `deepspeed.zero.Init`, itself partitioned, copied one parameter at a time.

    `copy.deepcopy` cannot copy such a model: the copied parameters keep DeepSpeed's gather methods bound to the
    originals, so the copy's weights stay empty (shape `(0,)`) in its forward. The copy is built from the config
    the way `from_pretrained` builds under ZeRO-3 (`_from_config` enters `zero.Init` while the Trainer's
    DeepSpeed config is live), then each parameter is gathered in both models and copied.
    """
    import deepspeed

    reference = type(model)._from_config(model.config, dtype=next(model.parameters()).dtype)
    sources = dict(model.named_parameters())
    for name, target in reference.named_parameters():
        with deepspeed.zero.GatheredParameters([sources[name], target], modifier_rank=0):
            target.data.copy_(sources[name].data)
    buffers = dict(model.named_buffers())
    for name, buffer in reference.named_buffers():
        buffer.copy_(buffers[name])
    return reference


def create_reference_model(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` in eval mode, the DPO reference (pi_ref) for full fine-tuning.

    A model built under ZeRO-3's `zero.Init` (a `zero3.yaml` launch) is copied shard by shard
    (`_copy_zero3_partitioned`), any other by `copy.deepcopy`.
    """
    if is_zero3_partitioned(model):
        reference = _copy_zero3_partitioned(model).eval()
    else:
        reference = copy.deepcopy(model).eval()
    reference.__dict__.pop("forward", None)  # a TRL fused-head patch on the policy is the policy's own
    for param in reference.parameters():
        param.requires_grad_(False)
    return reference


def _is_peft_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _no_unused_parameter_search(args) -> None:
    if args is not None and getattr(args, "ddp_find_unused_parameters", False) is None:
        args.ddp_find_unused_parameters = False


def _default_collator(collator_class, trainer_name: str, processing_class, args, media_root):
    """The trainer's collator when none is given: `collator_class` over the processor, capped at `args.max_length`."""
    if not isinstance(processing_class, ProcessorMixin):
        raise TypeError(
            f"{trainer_name} needs processing_class=MavorsProcessor(...) to build its collator, got "
            f"{type(processing_class).__name__}"
        )
    return collator_class(
        processing_class, media_root=media_root, max_length=getattr(args, "max_length", None)
    )


class MavorsSFTTrainer(MavorsTrainingMixin, SFTTrainer):
    """`trl.SFTTrainer` for Mavors conversations with videos and images (`data.py` format).

    ```python
    trainer = MavorsSFTTrainer(model=model, args=SFTConfig(output_dir=..., learning_rate=1e-5),
                               train_dataset=load_mavors_dataset("train.jsonl"), processing_class=processor,
                               media_root="/data/videos", stage="2")
    ```
    """

    def __init__(
        self,
        model,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class: ProcessorMixin | None = None,
        media_root: str | os.PathLike | None = None,
        stage: str | None = None,
        **kwargs,
    ):
        if data_collator is None:
            data_collator = _default_collator(
                MavorsSFTCollator, "MavorsSFTTrainer", processing_class, args, media_root
            )
        _no_unused_parameter_search(args)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=with_images_column(train_dataset),
            eval_dataset=with_images_column(eval_dataset),
            processing_class=processing_class,
            stage=stage,
            **kwargs,
        )


class MavorsDPOTrainer(MavorsTrainingMixin, DPOTrainer):
    """`trl.DPOTrainer` for Mavors preference pairs with video and image prompts (`data.py` format).

    Reference model: `ref_model=` if given; with a PEFT adapter (`peft_config=` or a `PeftModel`), TRL's own
    handling (the adapter switched off gives pi_ref); otherwise a frozen copy of `model` made here.

    ```python
    trainer = MavorsDPOTrainer(model=model, args=DPOConfig(output_dir=..., learning_rate=1e-5, beta=0.1),
                               train_dataset=load_mavors_dataset("pairs.jsonl"), processing_class=processor,
                               media_root="/data/videos", stage="dpo")
    ```
    """

    def __init__(
        self,
        model,
        ref_model=None,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class: ProcessorMixin | None = None,
        media_root: str | os.PathLike | None = None,
        stage: str | None = None,
        peft_config=None,
        **kwargs,
    ):
        if data_collator is None:
            data_collator = _default_collator(
                MavorsPreferenceCollator, "MavorsDPOTrainer", processing_class, args, media_root
            )
        if (
            ref_model is None
            and peft_config is None
            and not _is_peft_model(model)
            and isinstance(model, nn.Module)
        ):
            if not getattr(args, "precompute_ref_log_probs", False):
                logger.info("No ref_model given: using a frozen copy of the policy as the DPO reference")
                ref_model = create_reference_model(model)
        _no_unused_parameter_search(args)
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=with_images_column(train_dataset),
            eval_dataset=with_images_column(eval_dataset),
            processing_class=processing_class,
            peft_config=peft_config,
            stage=stage,
            **kwargs,
        )


__all__ = ["MavorsSFTTrainer", "MavorsDPOTrainer", "create_reference_model", "with_images_column"]
