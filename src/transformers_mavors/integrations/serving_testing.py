"""A tiny Mavors checkpoint that vLLM's CPU kernels accept, for the serving tests and benchmark (offline).

vLLM's CPU attention needs a head dimension of at least 32, so the language model here has 2 heads of 32 (the
shared tiny configs use 12). Weights are seeded noise: greedy decoding then gives varied, reproducible tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..modeling_mavors import MavorsForConditionalGeneration
from ..tiny import build_tiny_tokenizer, tiny_mavors_config, tiny_processor

# 2 heads x 32 and one key/value head: the smallest Qwen2 vLLM's CPU attention kernel runs
SERVING_TEXT_OVERRIDES = {
    "hidden_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
}


def build_tiny_serving_checkpoint(
    path: str | os.PathLike, seed: int = 0, std: float = 0.2, text_overrides: dict | None = None
) -> MavorsForConditionalGeneration:
    """Save a random tiny Mavors model and its processor to `path`; returns the model (eval mode, float32)."""
    tokenizer = build_tiny_tokenizer()
    config = tiny_mavors_config(
        tokenizer, text_overrides={**SERVING_TEXT_OVERRIDES, **(text_overrides or {})}
    )
    model = MavorsForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)
    path = Path(path)
    model.save_pretrained(path)
    tiny_processor(tokenizer).save_pretrained(path)
    return model


__all__ = ["SERVING_TEXT_OVERRIDES", "build_tiny_serving_checkpoint"]
