"""The paper's training stages (§4, §5.1): what each stage trains, at which learning rate, on which schedule.

| stage | trains | frozen | schedule |
|---|---|---|---|
| `"1"` modality alignment | IFA, projector | IVE, LLM | constant |
| `"1.5"` temporal enhancement | IVE, IFA, projector | LLM | constant |
| `"2"` instruction tuning | all | - | cosine to 1/10 |
| `"dpo"` (stage 3) | all | - | cosine to 1/10 |

The IVE (`vision_model.{embeddings,encoder,post_layernorm}`) and IFA (`vision_model.aggregator`) learn at 1/10 of
the base rate in every stage; the projector and the LLM (`language_model`, `lm_head`) at the base rate (1e-5 in
the paper). Parameters are told apart by name, so the same code works on `MavorsForConditionalGeneration`,
`MavorsModel`, a PEFT-wrapped model and an FSDP-wrapped one.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

COMPONENTS = ("ive", "ifa", "projector", "llm")
STAGES = ("1", "1.5", "2", "dpo")

STAGE_TRAINABLE: dict[str, frozenset[str]] = {
    "1": frozenset({"ifa", "projector"}),
    "1.5": frozenset({"ive", "ifa", "projector"}),
    "2": frozenset(COMPONENTS),
    "dpo": frozenset(COMPONENTS),
}

# (transformers scheduler name, its kwargs); warmup, when asked for, is added by `stage_lr_scheduler`
STAGE_SCHEDULE: dict[str, tuple[str, dict]] = {
    "1": ("constant", {}),
    "1.5": ("constant", {}),
    "2": ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
    "dpo": ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
}

# sub-image tiling (eq. 8) starts with stage 2 (paper §4): stages 1 and 1.5 see each image as one piece
STAGE_MAX_SLICES: dict[str, int] = {"1": 1, "1.5": 1}

VISION_LR_SCALE = 0.1  # IVE and IFA learn at 1/10 of the LLM's rate in every stage (paper §5.1)


def normalize_stage(stage: str | int | float) -> str:
    """`"1"`, `"1.5"`, `"2"`, `"dpo"` (also `1`, `1.5`, `2`, and `"3"` for DPO, the paper's stage 3)."""
    if isinstance(stage, bool) or not isinstance(stage, (str, int, float)):
        raise TypeError(f"stage must be one of {STAGES}, got {stage!r} of type {type(stage).__name__}")
    key = f"{stage:g}" if isinstance(stage, (int, float)) else stage.strip().lower()
    key = "dpo" if key == "3" else key
    if key not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; accepted stages are {STAGES} (or '3' for 'dpo')")
    return key


def parameter_component(name: str) -> str:
    """Which part of Mavors a parameter belongs to: `"ive"`, `"ifa"`, `"projector"` or `"llm"`.

    Decided by the module names of SPEC §7 anywhere in the dotted name, so wrapper prefixes (`base_model.model.`,
    `_fsdp_wrapped_module.`, `module.`) and adapter suffixes (`lora_A.default`) do not matter.
    """
    parts = name.split(".")
    if "vision_model" in parts:
        return "ifa" if "aggregator" in parts[parts.index("vision_model") :] else "ive"
    if "projector" in parts:
        return "projector"
    if "language_model" in parts or "lm_head" in parts:
        return "llm"
    raise ValueError(
        f"cannot tell which Mavors component parameter {name!r} belongs to; expected a name containing "
        "'vision_model' (IVE; IFA under 'vision_model.aggregator'), 'projector', 'language_model' or 'lm_head'. "
        "Pass a MavorsForConditionalGeneration or MavorsModel (optionally PEFT-wrapped)."
    )


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    # biases and every norm weight (LayerNorm, RMSNorm) are 1-D; decaying them only shrinks scales towards 0.
    # A parameter partitioned by ZeRO-3 (`zero.Init`) holds a 1-D shard: its full shape is `ds_shape`
    ndim = len(param.ds_shape) if hasattr(param, "ds_shape") else param.ndim
    return ndim < 2 or name.endswith(".bias")


def _is_peft_model(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def mavors_parameter_groups(
    model: nn.Module,
    learning_rate: float = 1e-5,
    weight_decay: float = 0.0,
    vision_lr_scale: float = VISION_LR_SCALE,
    named_parameters: Iterable[tuple[str, nn.Parameter]] | None = None,
) -> list[dict]:
    """Optimizer parameter groups of the trainable (`requires_grad`) parameters, following the paper.

    Up to four groups, empty ones left out, each with a `"name"` key:

    - `"language"`: LLM and projector weights, `lr=learning_rate`, `weight_decay=weight_decay`;
    - `"language_no_decay"`: their biases and norm weights, `weight_decay=0`;
    - `"vision"` / `"vision_no_decay"`: the same split for the IVE and IFA, `lr=learning_rate * vision_lr_scale`.

    Torch optimizers keep extra keys, so `optimizer.param_groups[i]["name"]` says which group is which, and LR
    schedulers scale every group's own rate, so the 1/10 ratio holds through the schedule.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not 0 < vision_lr_scale < float("inf"):
        # above 1 is allowed: a vision tower trained from scratch may learn faster than the LLM it feeds
        raise ValueError(f"vision_lr_scale must be a positive finite number, got {vision_lr_scale}")
    groups = {
        "language": {"params": [], "lr": learning_rate, "weight_decay": weight_decay},
        "language_no_decay": {"params": [], "lr": learning_rate, "weight_decay": 0.0},
        "vision": {"params": [], "lr": learning_rate * vision_lr_scale, "weight_decay": weight_decay},
        "vision_no_decay": {"params": [], "lr": learning_rate * vision_lr_scale, "weight_decay": 0.0},
    }
    seen = set()
    for name, param in named_parameters if named_parameters is not None else model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        side = "vision" if parameter_component(name) in ("ive", "ifa") else "language"
        groups[side + ("_no_decay" if _is_no_decay(name, param) else "")]["params"].append(param)
    return [{"name": key, **group} for key, group in groups.items() if group["params"]]


def prepare_stage(
    model: nn.Module,
    stage: str | int | float,
    learning_rate: float = 1e-5,
    weight_decay: float = 0.0,
    vision_lr_scale: float = VISION_LR_SCALE,
) -> list[dict]:
    """Set `requires_grad` for `stage` (SPEC §4) and return the optimizer parameter groups.

    Args:
        model: a `MavorsForConditionalGeneration` or `MavorsModel`, optionally wrapped by PEFT.
        stage: `"1"`, `"1.5"`, `"2"` or `"dpo"`.
        learning_rate: the LLM's and projector's rate; the IVE and IFA get `learning_rate * vision_lr_scale`.
        weight_decay: applied to weight matrices; biases and norm weights get none.

    Returns:
        `mavors_parameter_groups(model, ...)`: a list of `{"name", "params", "lr", "weight_decay"}` dicts, ready
        for `torch.optim.AdamW(groups)`.

    On a PEFT model the stage only *freezes*: parameters of components the stage keeps frozen lose
    `requires_grad`, the others keep what PEFT decided (adapters trainable, base weights frozen), so a stage never
    unfreezes base weights under an adapter.
    """
    stage = normalize_stage(stage)
    trainable = STAGE_TRAINABLE[stage]
    only_freeze = _is_peft_model(model)
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, param in model.named_parameters():
        component = parameter_component(name)
        if component not in trainable:
            param.requires_grad_(False)
        elif not only_freeze:
            param.requires_grad_(True)
        counts[component] += param.numel() if param.requires_grad else 0
    logger.info(
        "Stage %s: trainable parameters per component %s (IVE/IFA at %.3g x the base learning rate %.3g)",
        stage,
        counts,
        vision_lr_scale,
        learning_rate,
    )
    return mavors_parameter_groups(model, learning_rate, weight_decay, vision_lr_scale)


def stage_lr_scheduler(stage: str | int | float, num_warmup_steps: int = 0) -> tuple[str, dict]:
    """`(lr_scheduler_type, lr_scheduler_kwargs)` for `stage`, e.g. to pass to `TrainingArguments`.

    Stages 1 and 1.5 keep the rate constant (`"constant_with_warmup"` when `num_warmup_steps > 0`); stage 2 and
    DPO decay it along a cosine to 1/10 of its initial value (`"cosine_with_min_lr"`, `min_lr_rate=0.1`).
    """
    name, kwargs = STAGE_SCHEDULE[normalize_stage(stage)]
    if name == "constant" and num_warmup_steps > 0:
        name = "constant_with_warmup"
    return name, dict(kwargs)


__all__ = [
    "COMPONENTS",
    "STAGES",
    "STAGE_TRAINABLE",
    "STAGE_SCHEDULE",
    "VISION_LR_SCALE",
    "normalize_stage",
    "parameter_component",
    "mavors_parameter_groups",
    "prepare_stage",
    "stage_lr_scheduler",
]


def stage_processor_kwargs(stage: str | int | float, processor_kwargs: dict | None = None) -> dict:
    """`processor_kwargs` with the stage's image tiling: `max_slices=1` in stages 1 and 1.5 unless given.

    The paper tiles images into sub-images only from stage 2 on (§4); an explicit `max_slices` is kept.
    """
    kwargs = dict(processor_kwargs or {})
    limit = STAGE_MAX_SLICES.get(normalize_stage(stage))
    if limit is not None:
        kwargs.setdefault("max_slices", limit)
    return kwargs
