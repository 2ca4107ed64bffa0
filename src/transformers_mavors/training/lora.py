"""LoRA through PEFT: target presets for Mavors, and merge-and-save.

| preset | LoRA on every `nn.Linear` of |
|---|---|
| `"llm"` | the language model (`language_model`) |
| `"llm+projector"` | the language model and the projector |
| `"all-linear"` | the language model, the projector, the IVE's SigLIP layers and the IFA |

`lm_head` is never a target (TRL computes log-probabilities from `lm_head.weight` directly and refuses an
adapter there). The Conv3d patch embedding is left out unless `include_patch_embedding=True`; it is then trained
in full through PEFT's `modules_to_save` rather than with a low-rank adapter, because the model applies the
patch kernel as a matrix (eq. 1 on pre-cut patches), which a LoRA wrapper around the `Conv3d` would not see.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn
from transformers.utils import logging

from .stages import parameter_component

logger = logging.get_logger(__name__)

LORA_PRESETS: dict[str, frozenset[str]] = {
    "llm": frozenset({"llm"}),
    "llm+projector": frozenset({"llm", "projector"}),
    "all-linear": frozenset({"llm", "projector", "ive", "ifa"}),
}


def lora_target_modules(model: nn.Module, preset: str = "llm") -> list[str]:
    """Full names of the `nn.Linear` modules the preset adapts (never `lm_head`), in model order."""
    if preset not in LORA_PRESETS:
        raise ValueError(f"unknown LoRA preset {preset!r}; accepted presets are {tuple(LORA_PRESETS)}")
    components = LORA_PRESETS[preset]
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.split(".")[-1] == "lm_head":
            continue
        if parameter_component(name + ".weight") in components:
            names.append(name)
    if not names:
        raise ValueError(f"the model has no nn.Linear module for LoRA preset {preset!r}")
    return names


def patch_embedding_module_name(model: nn.Module) -> str:
    for name, _ in model.named_modules():
        if name.endswith("embeddings.patch_embedding") and parameter_component(name + ".weight") == "ive":
            return name
    raise ValueError("the model has no vision_model.embeddings.patch_embedding")


def mavors_lora_config(
    model: nn.Module,
    preset: str = "llm",
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    include_patch_embedding: bool = False,
    **lora_kwargs: Any,
):
    """A `peft.LoraConfig` for `model` with the preset's targets; pass it to `get_peft_model` or TRL's
    `peft_config=`. Extra keyword arguments go to `LoraConfig` (e.g. `use_rslora=True`)."""
    from peft import LoraConfig

    if r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer, got {r}")
    modules_to_save = list(lora_kwargs.pop("modules_to_save", None) or [])
    if include_patch_embedding:
        modules_to_save.append(patch_embedding_module_name(model))
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_target_modules(model, preset),
        modules_to_save=modules_to_save or None,
        task_type="CAUSAL_LM",
        **lora_kwargs,
    )


def apply_lora(model: nn.Module, preset: str = "llm", **config_kwargs: Any):
    """`peft.get_peft_model(model, mavors_lora_config(model, preset, **config_kwargs))`."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, mavors_lora_config(model, preset, **config_kwargs))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA preset %r: %d of %d parameters trainable", preset, trainable, total)
    return peft_model


def merge_and_save(peft_model, output_dir: str | os.PathLike, processor=None, **save_kwargs: Any):
    """Merge the adapters into the base weights, save a plain Mavors checkpoint (safetensors), and the processor.

    Returns the merged model; `MavorsForConditionalGeneration.from_pretrained(output_dir)` loads it without PEFT.
    """
    if not hasattr(peft_model, "merge_and_unload"):
        raise TypeError(f"expected a PEFT model with adapters to merge, got {type(peft_model).__name__}")
    merged = peft_model.merge_and_unload()
    # TRL's trainers patch `forward` on the instance (fused LM head); the saved checkpoint does not carry it
    merged.__dict__.pop("forward", None)
    merged.save_pretrained(output_dir, **save_kwargs)
    if processor is not None:
        processor.save_pretrained(output_dir)
    return merged


__all__ = [
    "LORA_PRESETS",
    "lora_target_modules",
    "patch_embedding_module_name",
    "mavors_lora_config",
    "apply_lora",
    "merge_and_save",
]
