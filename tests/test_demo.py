"""The offline demo: the shipped tiny checkpoint and sample video answer the README's "run it" command."""

import re
from pathlib import Path

import numpy as np
import pytest
import tomllib
from conftest import mavors

from transformers_mavors.synthetic import make_scene
from transformers_mavors.synthetic.data import HELDOUT_SEED_OFFSET
from transformers_mavors.synthetic.demo import DEMO_MODEL_DIR, DEMO_SAMPLE_SEED, demo_model_path
from transformers_mavors.synthetic.niah import read_frames
from transformers_mavors.synthetic.scenes import FPS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "assets" / "demo.mp4"


def test_demo_checkpoint_is_small_safetensors_without_code():
    files = {path.name: path for path in demo_model_path().iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= set(files)
    assert not [name for name in files if name.endswith((".py", ".bin", ".pt"))]
    # loads through the installed package, not through remote code
    assert not [
        name for name, path in files.items() if name.endswith(".json") and "auto_map" in path.read_text()
    ]
    assert sum(path.stat().st_size for path in files.values()) < 6 * 2**20  # "a few MB"
    # a non-editable install ships the directory too
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "demo_model/*" in package_data["transformers_mavors.synthetic"]


def test_sample_video_is_the_held_out_caption_scene():
    scene = make_scene("caption", HELDOUT_SEED_OFFSET + DEMO_SAMPLE_SEED)
    frames = read_frames(SAMPLE, FPS)
    assert frames.shape == scene.frames.shape
    assert np.abs(frames.astype(np.int16) - scene.frames).mean() < 4  # lossy MP4, same picture


def test_strip_code_removes_code_files_and_nested_auto_maps(tmp_path):
    import json

    from transformers_mavors.synthetic.demo import strip_code

    (tmp_path / "modeling_x.py").write_text("pass\n")
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoConfig": "c.C"}, "a": 1}))
    nested = {"image_processor": {"auto_map": {"A": "b.B"}, "size": 2}, "video_processor": {"fps": 4}}
    (tmp_path / "processor_config.json").write_text(json.dumps(nested))
    strip_code(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "processor_config.json"]
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
    assert json.loads((tmp_path / "processor_config.json").read_text()) == {
        "image_processor": {"size": 2},
        "video_processor": {"fps": 4},
    }


def test_missing_demo_model_is_a_clear_error(monkeypatch, tmp_path):
    import transformers_mavors.synthetic.demo as demo

    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="demo model is missing"):
        demo.demo_model_path()


def test_generate_without_model_describes_the_sample():
    """The README's "run it" command, offline: the bundled model captions the sample correctly."""
    result = mavors("generate", "--video", SAMPLE, "--prompt", "Describe the video.")
    assert result.returncode == 0, result.stderr
    assert "demo model" in result.stderr and str(DEMO_MODEL_DIR.name) in result.stderr
    reference = make_scene("caption", HELDOUT_SEED_OFFSET + DEMO_SAMPLE_SEED).answer
    assert re.sub(r"\s+", " ", result.stdout).strip() == reference
