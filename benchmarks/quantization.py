"""Quantized loading of a Mavors checkpoint on CPU: memory of the weights and agreement with the fp32 model.

    TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 python benchmarks/quantization.py [--json docs/quantization.json]

Needs the `quantization` extra (`pip install torch==2.13.0 -e ".[quantization]"`). A random model the size of the
demo's text tower is saved, then reloaded with torchao int8 weight-only and bitsandbytes 8-bit / nf4, each with the
vision tower quantized and kept in full precision. Reported per variant: bytes held by the weights (quantized
tensors counted through their inner data and scales), relative logit error and top-1 agreement on a video prompt,
and whether `generate` ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig, TorchAoConfig

import transformers_mavors  # noqa: F401
from transformers_mavors import MavorsForConditionalGeneration, num_visual_tokens
from transformers_mavors.testing_utils import build_tiny_tokenizer, tiny_mavors_config

TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4)
VISION = dict(hidden_size=128, intermediate_size=256, ifa_intermediate_size=256)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a (possibly quantized, tensor-subclass) parameter holds."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(tensor_bytes(p) for p in model.parameters()) + sum(tensor_bytes(b) for b in model.buffers())


def variants() -> dict:
    from torchao.quantization import Int8WeightOnlyConfig

    # patterns match module names from the start (transformers.quantizers.quantizers_utils.should_convert_module)
    skip_vision = ["model.vision_model", "lm_head"]
    return {
        "torchao int8 weight-only": TorchAoConfig(Int8WeightOnlyConfig()),
        "torchao int8 weight-only, vision fp32": TorchAoConfig(
            Int8WeightOnlyConfig(), modules_to_not_convert=skip_vision
        ),
        "bitsandbytes 8-bit": BitsAndBytesConfig(load_in_8bit=True),
        "bitsandbytes 8-bit, vision fp32": BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_skip_modules=skip_vision
        ),
        "bitsandbytes nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        "bitsandbytes nf4, vision fp32": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", llm_int8_skip_modules=skip_vision
        ),
    }


def build(directory: Path):
    tokenizer = build_tiny_tokenizer()
    config = tiny_mavors_config(tokenizer, vision_overrides=VISION, text_overrides=TEXT)
    torch.manual_seed(0)
    model = MavorsForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(0)
    with (
        torch.no_grad()
    ):  # trained-like scales: small noise around the init (fresh aggregators are the identity)
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * 0.05
            param.copy_(1.0 + noise if "norm" in name and name.endswith("weight") else noise)
    model.save_pretrained(directory)
    grid = torch.tensor([[2, 4, 4]])
    rows = torch.randn(32, 3 * config.vision_config.frames_per_chunk * 14 * 14, generator=generator)
    text = tokenizer("Look at the video. What moves?")["input_ids"]
    start, end = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    ids = [start] + [config.video_token_id] * num_visual_tokens((2, 4, 4)) + [end] + text
    inputs = dict(input_ids=torch.tensor([ids]), pixel_values_videos=rows, video_grid_thw=grid)
    return model, inputs


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        reference, inputs = build(Path(directory))
        with torch.no_grad():
            expected = reference(**inputs).logits
        rows = [
            {
                "variant": "fp32",
                "weight_bytes": weight_bytes(reference),
                "relative_logit_error": 0.0,
                "top1_agreement": 1.0,
                "generate": True,
            }
        ]
        for name, quantization in variants().items():
            model = AutoModelForImageTextToText.from_pretrained(
                directory, quantization_config=quantization, dtype=torch.float32
            ).eval()
            with torch.no_grad():
                logits = model(**inputs).logits
                generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            rows.append(
                {
                    "variant": name,
                    "weight_bytes": weight_bytes(model),
                    "relative_logit_error": float((logits - expected).norm() / expected.norm()),
                    "top1_agreement": float((logits.argmax(-1) == expected.argmax(-1)).float().mean()),
                    "generate": generated.shape[1] == inputs["input_ids"].shape[1] + 4,
                }
            )
    base = rows[0]["weight_bytes"]
    print(f"{'variant':40} {'weights':>10} {'ratio':>6} {'rel. err':>9} {'top-1':>6}")
    for row in rows:
        print(
            f"{row['variant']:40} {row['weight_bytes'] / 2**20:8.2f}MB {row['weight_bytes'] / base:6.2f} "
            f"{row['relative_logit_error']:9.4f} {row['top1_agreement']:6.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
