"""A checkpoint saved before the architecture redesign still loads and gives the outputs it gave then.

`tests/fixtures/legacy_checkpoint/` was written by `tests/fixtures/make_legacy_checkpoint.py` with the code of
2026-11-21: model weights, processor config, tokenizer, chat template, a sample clip, and the processor's inputs
and the model's outputs for one chat with a video (accelerated playback) and a tiled image.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

import transformers_mavors  # noqa: F401

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoint"


@pytest.fixture(scope="module")
def legacy():
    from fixtures.make_legacy_checkpoint import legacy_image, legacy_messages

    processor = AutoProcessor.from_pretrained(FIXTURE)
    model = AutoModelForImageTextToText.from_pretrained(FIXTURE).eval()
    inputs = processor.apply_chat_template(
        legacy_messages(str(FIXTURE / "clip.mp4"), legacy_image()),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    return processor, model, inputs, load_file(FIXTURE / "expected.safetensors")


def test_legacy_configs_are_the_ones_saved_before_the_redesign():
    config = json.loads((FIXTURE / "config.json").read_text())
    assert config["vision_config"]["frames_per_chunk"] == 2 and "sync_vision_calls" in config["vision_config"]
    assert "video_processor" in json.loads((FIXTURE / "processor_config.json").read_text())


def test_legacy_processor_builds_the_same_inputs(legacy):
    _, _, inputs, expected = legacy
    for key in ("input_ids", "attention_mask", "image_grid_thw", "video_grid_thw", "video_chunk_positions"):
        assert torch.equal(inputs[key], expected[key]), key
    for key in ("pixel_values", "pixel_values_videos"):
        assert list(inputs[key].shape) == expected[f"{key}.shape"].tolist()
        assert torch.allclose(inputs[key].double().sum(0), expected[f"{key}.sum"], rtol=0, atol=1e-9), key


def test_legacy_model_gives_the_same_logits_and_greedy_tokens(legacy):
    _, model, inputs, expected = legacy
    with torch.no_grad():
        logits = model(**inputs).logits[:, -expected["logits"].shape[1] :]
        tokens = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert (logits - expected["logits"]).abs().max() <= 1e-5
    assert torch.equal(tokens, expected["generated"])
