"""Finding 3 of issue 18 (Python side): a broken checkpoint fails before modules are built, by file name and
with what is wrong; missing, unexpected or non-finite tensors are a loud warning (an error with strict_weights)."""

import json
import shutil
import time

import pytest
import torch
from conftest import randomize_
from safetensors.torch import load_file, save_file
from transformers.testing_utils import CaptureLogger

from transformers_mavors import MavorsForConditionalGeneration, MavorsProcessor, loading
from transformers_mavors.testing_utils import tiny_mavors_config, tiny_processor

PROJECTOR = "model.projector.linear_1.weight"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("good_ckpt")
    torch.manual_seed(0)
    randomize_(MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)), std=0.1).save_pretrained(path)
    tiny_processor(tokenizer).save_pretrained(path)
    return path


def broken_copy(checkpoint, tmp_path, damage):
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint, path)
    damage(path)
    return path


def drop_vision_config(path):
    config = json.loads((path / "config.json").read_text())
    del config["vision_config"]
    (path / "config.json").write_text(json.dumps(config))


def truncate(name, keep=0.5):
    def damage(path):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def write_bytes(name, data):
    return lambda path: (path / name).write_bytes(data)


def edit_tensors(edit):
    def damage(path):
        tensors = load_file(path / "model.safetensors")
        edit(tensors)
        save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})

    return damage


def grow_projector(tensors):
    tensors[PROJECTOR] = torch.zeros(tensors[PROJECTOR].shape[0] + 1, tensors[PROJECTOR].shape[1])


@pytest.mark.parametrize(
    "damage, message",
    [
        (drop_vision_config, r"config.json lacks vision_config"),
        (truncate("model.safetensors"), r"model.safetensors is (truncated|not a readable safetensors)"),
        (write_bytes("model.safetensors", b""), r"model.safetensors is empty"),
        (
            write_bytes("model.safetensors", b"\x13garbage" * 50),
            r"model.safetensors is not a readable safetensors",
        ),
        (
            edit_tensors(grow_projector),
            rf"config.json does not describe the weights.*{PROJECTOR}.*\[49, 32\]",
        ),
        (write_bytes("config.json", b""), r"config.json is empty"),
        (truncate("config.json"), r"config.json is not valid JSON"),
    ],
    ids=[
        "no vision_config",
        "truncated weights",
        "empty weights",
        "garbled weights",
        "shape",
        "empty config",
        "cut config",
    ],
)
def test_broken_model_files_are_named(checkpoint, tmp_path, damage, message):
    path = broken_copy(checkpoint, tmp_path, damage)
    start = time.monotonic()
    with pytest.raises(ValueError, match=message):
        MavorsForConditionalGeneration.from_pretrained(path)
    assert time.monotonic() - start < 5  # nothing full-size is built first


@pytest.mark.parametrize(
    "damage, message",
    [
        (write_bytes("tokenizer.json", b""), r"tokenizer.json is empty"),
        (truncate("tokenizer.json"), r"tokenizer.json is not valid JSON"),
        (truncate("processor_config.json", 0.3), r"processor_config.json is not valid JSON"),
    ],
)
def test_broken_processor_files_are_named(checkpoint, tmp_path, damage, message):
    path = broken_copy(checkpoint, tmp_path, damage)
    with pytest.raises(ValueError, match=message):
        MavorsProcessor.from_pretrained(path)


def drop_projector(tensors):
    del tensors[PROJECTOR]


def add_stray(tensors):
    tensors["stray.weight"] = torch.zeros(2)


def poison(tensors):
    tensors[PROJECTOR] = torch.full_like(tensors[PROJECTOR], float("nan"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (drop_projector, rf"1 missing \(randomly initialised\) tensor\(s\): {PROJECTOR}"),
        (add_stray, r"1 unexpected \(ignored\) tensor\(s\): stray.weight"),
        (poison, rf"NaN or inf: {PROJECTOR}"),
    ],
    ids=["missing", "unexpected", "nan"],
)
def test_weight_problems_warn_loudly_and_fail_when_strict(checkpoint, tmp_path, edit, message):
    path = broken_copy(checkpoint, tmp_path, edit_tensors(edit))
    with CaptureLogger(loading.logger) as captured:
        MavorsForConditionalGeneration.from_pretrained(path)
    assert "!!!!" in captured.out
    assert __import__("re").search(message, captured.out), captured.out
    with pytest.raises(ValueError, match=message):
        MavorsForConditionalGeneration.from_pretrained(path, strict_weights=True)


def test_a_good_checkpoint_loads_silently(checkpoint):
    with CaptureLogger(loading.logger) as captured:
        model, info = MavorsForConditionalGeneration.from_pretrained(checkpoint, output_loading_info=True)
    assert captured.out == "" and not info["missing_keys"]
    assert isinstance(model, MavorsForConditionalGeneration)
