"""Assembling Mavors from pretrained SigLIP and Qwen2 checkpoints (kept apart from the module code)."""

from __future__ import annotations

import dataclasses
import os

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from .configuration_mavors import MavorsConfig, MavorsVisionConfig, add_vision_special_tokens

logger = logging.get_logger(__name__)

# SigLIP vision-config fields carried over to MavorsVisionConfig; everything else is Mavors' own.
SIGLIP_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)
LOADING_OPTIONS = ("dtype", "attn_implementation")
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only")  # where a Hub id is looked up (huggingface_hub)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


def _field_names(config_class) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class)}


def _split_overrides(overrides: dict, allow_model_fields: bool) -> tuple[dict, dict, dict]:
    """Split keyword overrides into (vision-config fields, MavorsConfig fields, loading options)."""
    vision_fields = _field_names(MavorsVisionConfig) - _field_names(MavorsConfig.__mro__[1])
    model_fields = (
        _field_names(MavorsConfig) - {"vision_config", "text_config"} - _field_names(MavorsConfig.__mro__[1])
    )
    model_fields |= {"tie_word_embeddings"}
    vision, model, loading = {}, {}, {}
    for key, value in overrides.items():
        if key in LOADING_OPTIONS:
            loading[key] = value
        elif key in vision_fields:
            vision[key] = value
        elif allow_model_fields and key in model_fields:
            model[key] = value
        else:
            accepted = sorted(vision_fields | (model_fields if allow_model_fields else set())) + list(
                LOADING_OPTIONS
            )
            raise TypeError(f"unexpected keyword argument {key!r}; accepted overrides: {', '.join(accepted)}")
    if "dtype" in loading:
        dtype = loading["dtype"]
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(
                    f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)} or a torch.dtype"
                )
            loading["dtype"] = DTYPES[dtype]
        elif not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a string or torch.dtype, got {type(dtype).__name__}")
    return vision, model, loading


def _check_dir(path, what: str, hub: dict | None = None) -> str:
    """A local checkpoint directory, or a Hub id's local snapshot (`revision`, `cache_dir`, `local_files_only`)."""
    from .loading import resolve_checkpoint, validate_checkpoint_files

    path = os.fspath(resolve_checkpoint(path, f"{what} checkpoint", **(hub or {})))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{what} checkpoint {path!r} has no config.json")
    validate_checkpoint_files(path, require_mavors_config=False)
    return path


def _load_siglip_vision(siglip_dir: str, loading: dict):
    """The `SiglipVisionModel` inside a SigLIP checkpoint (vision-only or full `SiglipModel`)."""
    config = AutoConfig.from_pretrained(siglip_dir)
    if config.model_type not in ("siglip", "siglip_vision_model"):
        raise ValueError(f"{siglip_dir!r} holds a {config.model_type!r} checkpoint, expected a SigLIP one")
    model = AutoModel.from_pretrained(siglip_dir, dtype=torch.float32)
    return model.vision_model if hasattr(model, "vision_model") else model


def _pop_hub_options(overrides: dict) -> dict:
    return {key: overrides.pop(key) for key in HUB_OPTIONS if key in overrides}


def build_vision_from_siglip(model_class, siglip_dir, **overrides):
    siglip_dir = _check_dir(siglip_dir, "SigLIP", _pop_hub_options(overrides))
    vision_overrides, _, loading = _split_overrides(overrides, allow_model_fields=False)
    siglip = _load_siglip_vision(siglip_dir, loading)
    config = MavorsVisionConfig(
        **{name: getattr(siglip.config, name) for name in SIGLIP_FIELDS}, **vision_overrides
    )
    if "attn_implementation" in loading:
        config._attn_implementation = loading["attn_implementation"]
    model = model_class(config)
    inflate_siglip_weights(model, siglip)
    if isinstance(loading.get("dtype"), torch.dtype):
        model = model.to(loading["dtype"])
    return model


@torch.no_grad()
def inflate_siglip_weights(vision_model, siglip) -> None:
    """Copy a `SiglipVisionModel`'s weights into a `MavorsVisionModel`, inflating the 2D patch kernel to 3D."""
    source = siglip.state_dict()
    target = vision_model.state_dict()
    frames = vision_model.config.frames_per_chunk
    kernel_2d = source["embeddings.patch_embedding.weight"]  # (d, C, p, p)
    # replicate along time; MavorsVisionEmbeddings divides the convolution by F (eq. 1)
    target["embeddings.patch_embedding.weight"].copy_(kernel_2d.unsqueeze(2).expand(-1, -1, frames, -1, -1))
    copied = {"embeddings.patch_embedding.weight"}
    for key, value in source.items():
        if key.startswith("head.") or key in copied or key == "embeddings.position_ids":
            continue
        if key not in target:
            raise KeyError(f"SigLIP weight {key!r} has no place in MavorsVisionModel")
        if target[key].shape != value.shape:
            raise ValueError(
                f"SigLIP weight {key!r} has shape {tuple(value.shape)}, expected {tuple(target[key].shape)}"
            )
        target[key].copy_(value)
        copied.add(key)
    missing = [key for key in target if key not in copied and not key.startswith("aggregator.")]
    if missing:
        raise KeyError(f"SigLIP checkpoint lacks weights for {missing}")


def build_model_from_vision_text(model_class, siglip_dir, qwen_dir, **overrides):
    hub = _pop_hub_options(overrides)
    siglip_dir = _check_dir(siglip_dir, "SigLIP", hub)
    qwen_dir = _check_dir(qwen_dir, "Qwen2", hub)
    vision_overrides, model_overrides, loading = _split_overrides(overrides, allow_model_fields=True)
    siglip = _load_siglip_vision(siglip_dir, loading)
    text_model = AutoModelForCausalLM.from_pretrained(qwen_dir, dtype=torch.float32)
    if text_model.config.model_type != "qwen2":
        raise ValueError(
            f"{qwen_dir!r} holds a {text_model.config.model_type!r} model, expected a Qwen2 causal LM"
        )
    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    if add_vision_special_tokens(tokenizer):
        logger.warning("the tokenizer in %s lacks the vision special tokens; they were added", qwen_dir)
    if len(tokenizer) > text_model.config.vocab_size:
        text_model.resize_token_embeddings(len(tokenizer))

    vision_config = MavorsVisionConfig(
        **{name: getattr(siglip.config, name) for name in SIGLIP_FIELDS}, **vision_overrides
    )
    config = MavorsConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_model.config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        **model_overrides,
    )
    if "attn_implementation" in loading:
        config._attn_implementation = loading["attn_implementation"]
    model = model_class(config)
    inflate_siglip_weights(model.model.vision_model, siglip)
    with torch.no_grad():
        model.model.language_model.load_state_dict(text_model.model.state_dict())
        if not config.tie_word_embeddings:
            model.lm_head.weight.copy_(text_model.lm_head.weight)
    model.tie_weights()
    if isinstance(loading.get("dtype"), torch.dtype):
        model = model.to(loading["dtype"])
    return model
