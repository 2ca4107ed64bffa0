"""Training Mavors: the paper's stages, data format and collators, video DPO, LoRA (see `docs/training.md`).

- `stages`: `prepare_stage(model, stage, learning_rate)` (freezing + parameter groups), `stage_lr_scheduler`.
- `trainer`: `MavorsTrainer` (`transformers.Trainer` with the groups and per-stage schedule).
- `rank_sync`: `synchronize_vision_calls(model)`, the hooks that keep ranks in step through the vision tower
  (installed by the trainers; call it yourself in a custom accelerate loop).
- `distributed`: `detect_engine`, `cpu_distributed_kwargs` and the launch check (the `distributed:` line).
- `trl_trainers`: `MavorsSFTTrainer`, `MavorsDPOTrainer` (TRL with video; imported on first use).
- `data`: the JSONL record format, `load_mavors_dataset`, `MavorsSFTCollator`, `MavorsPreferenceCollator`.
- `negatives`: the paper's four-part shuffled captioning negatives.
- `lora`: PEFT presets (`"llm"`, `"llm+projector"`, `"all-linear"`) and `merge_and_save`.
"""

from .data import (
    MavorsPreferenceCollator,
    MavorsSFTCollator,
    build_sft_labels,
    load_mavors_dataset,
    normalize_record,
    truncate_batch,
    write_jsonl,
)
from .distributed import (
    DistributedSetupError,
    check_launch,
    cpu_distributed_kwargs,
    describe_distributed,
    detect_engine,
    is_zero3_partitioned,
)
from .lora import LORA_PRESETS, apply_lora, lora_target_modules, mavors_lora_config, merge_and_save
from .negatives import (
    build_video_caption_pairs,
    make_captioner,
    quarter_order,
    shuffle_quarters,
    write_shuffled_quarters,
)
from .rank_sync import has_sharded_weights, synchronize_vision_calls
from .stages import (
    STAGE_SCHEDULE,
    STAGE_TRAINABLE,
    STAGES,
    mavors_parameter_groups,
    parameter_component,
    prepare_stage,
    stage_lr_scheduler,
    stage_processor_kwargs,
)
from .trainer import MavorsTrainer, MavorsTrainingMixin

_TRL_NAMES = ("MavorsSFTTrainer", "MavorsDPOTrainer", "create_reference_model", "with_images_column")


def __getattr__(name: str):
    # TRL is only needed for its trainers; `prepare_stage` and `MavorsTrainer` work without it
    if name in _TRL_NAMES:
        from . import trl_trainers

        return getattr(trl_trainers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DistributedSetupError",
    "check_launch",
    "cpu_distributed_kwargs",
    "describe_distributed",
    "detect_engine",
    "is_zero3_partitioned",
    "STAGES",
    "STAGE_TRAINABLE",
    "STAGE_SCHEDULE",
    "prepare_stage",
    "mavors_parameter_groups",
    "parameter_component",
    "stage_lr_scheduler",
    "stage_processor_kwargs",
    "MavorsTrainer",
    "MavorsTrainingMixin",
    "synchronize_vision_calls",
    "has_sharded_weights",
    "MavorsSFTTrainer",
    "MavorsDPOTrainer",
    "create_reference_model",
    "with_images_column",
    "MavorsSFTCollator",
    "MavorsPreferenceCollator",
    "load_mavors_dataset",
    "normalize_record",
    "write_jsonl",
    "build_sft_labels",
    "truncate_batch",
    "LORA_PRESETS",
    "lora_target_modules",
    "mavors_lora_config",
    "apply_lora",
    "merge_and_save",
    "quarter_order",
    "shuffle_quarters",
    "write_shuffled_quarters",
    "build_video_caption_pairs",
    "make_captioner",
]
