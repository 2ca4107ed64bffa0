"""Quantized loading on CPU: torchao int8 weight-only and bitsandbytes 8-bit / nf4 load a Mavors checkpoint and
generate. Needs the `quantization` extra; `.ci/run` runs this file in an environment that has it (docs/usage.md)."""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

pytest.importorskip("torchao", reason="needs the quantization extra: pip install -e '.[quantization]'")
pytest.importorskip("bitsandbytes", reason="needs the quantization extra: pip install -e '.[quantization]'")

# the benchmark's model, inputs and variants, so the test checks exactly what docs/usage.md reports
_spec = importlib.util.spec_from_file_location(
    "benchmarks_quantization", Path(__file__).resolve().parents[1] / "benchmarks" / "quantization.py"
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("quantized")
    model, inputs = bench.build(directory)
    with torch.no_grad():
        logits = model(**inputs).logits
    return directory, inputs, logits, bench.weight_bytes(model)


# (variant, most relative logit error, least top-1 agreement, most weight bytes as a share of fp32)
CASES = [
    ("torchao int8 weight-only", 0.05, 0.9, 0.5),
    ("bitsandbytes 8-bit", 0.08, 0.8, 0.5),
    ("bitsandbytes nf4", 0.6, 0.3, 0.4),
    ("bitsandbytes 8-bit, vision fp32", 0.08, 0.8, 0.7),
]


@pytest.mark.parametrize("variant,max_error,min_top1,max_share", CASES)
def test_quantized_checkpoint_loads_agrees_and_generates(saved, variant, max_error, min_top1, max_share):
    directory, inputs, expected, full_bytes = saved
    model = AutoModelForImageTextToText.from_pretrained(
        directory, quantization_config=bench.variants()[variant], dtype=torch.float32
    ).eval()
    language_linear = model.model.language_model.layers[0].mlp.up_proj
    vision_linear = model.model.vision_model.encoder.layers[0].mlp.fc1
    assert bench.tensor_bytes(language_linear.weight) < language_linear.weight.numel() * 4  # really quantized
    assert (bench.tensor_bytes(vision_linear.weight) == vision_linear.weight.numel() * 4) == (
        "vision fp32" in variant
    )
    assert type(model.lm_head.weight) is torch.nn.Parameter  # the output head stays full precision
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    error = float((logits - expected).norm() / expected.norm())
    agreement = float((logits.argmax(-1) == expected.argmax(-1)).float().mean())
    assert error <= max_error and agreement >= min_top1, (error, agreement)
    assert bench.weight_bytes(model) <= max_share * full_bytes
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
