"""The command-line side of issue 18: Hub ids (finding 1), one-line errors without tracebacks (finding 3, also the
inspect and URL cases of finding 6), a `convert` that checks first and never deletes what it did not create
(finding 4), and the niah/LoRA messages of finding 9."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import save_qwen
from safetensors.torch import load_file, save_file

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.testing_utils import (
    build_tiny_tokenizer,
)

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def mavors(*args, env=None, timeout=300, pre="") -> subprocess.CompletedProcess:
    """`mavors ARGS` in a fresh interpreter (after the Python statements `pre`), as a user would run it."""
    code = pre + "import sys; from transformers_mavors_cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def cli(capsys, monkeypatch):
    """`mavors ARGS` in this process (`transformers_mavors_cli.main`, exit status and output as a user sees them),
    without an interpreter and torch start-up per call."""

    def run(*args) -> subprocess.CompletedProcess:
        from transformers_mavors_cli import main

        capsys.readouterr()
        try:
            status = main([str(arg) for arg in args])
        except SystemExit as exit:  # argparse usage errors
            status = exit.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out.out, out.err)

    return run


def assert_one_line_error(result, *fragments, status=1):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines and lines[-1].startswith("mavors "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.fixture
def root(hub_cache):
    return hub_cache


def offline(root) -> dict:
    return {"HF_HUB_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}


# --- finding 1: Hub ids --------------------------------------------------------------------------------------


def test_generate_with_a_hub_id_answers_as_with_the_directory(root):
    args = ["--video", root / "clip.mp4", "--prompt", "Describe the video.", "--max-new-tokens", "4"]
    by_id = mavors("generate", "--model", "org/name", *args, env=offline(root))
    local = mavors("generate", "--model", root / "ckpt", *args, env=offline(root))
    assert by_id.returncode == 0, by_id.stderr[-3000:]
    assert by_id.stdout == local.stdout and local.returncode == 0


@pytest.mark.parametrize("command", ["generate", "inspect"])
def test_missing_hub_id_offline_fails_in_seconds_with_one_line(root, command):
    args = ["--video", root / "clip.mp4", "--prompt", "Hi"] if command == "generate" else [root / "clip.mp4"]
    start = time.monotonic()
    result = mavors(command, *args, "--model", "org/missing", env=offline(root), timeout=60)
    assert time.monotonic() - start < 15
    assert_one_line_error(result, "'org/missing'", "HF_HUB_OFFLINE=1")


def test_inspect_and_convert_take_hub_ids(root):
    inspect = mavors("inspect", root / "clip.mp4", "--model", "org/name", "--json", env=offline(root))
    assert inspect.returncode == 0, inspect.stderr[-3000:]
    assert json.loads(inspect.stdout)["chunks"] >= 1
    output = root / "converted_from_ids"
    convert = mavors(
        "convert",
        *("--vision", "google/siglip-tiny", "--text", "Qwen/Qwen2-tiny", "--output", output),
        *("--frames-per-chunk", "4", "--ifa-layers", "1", "--dtype", "float32"),
        env=offline(root),
    )
    assert convert.returncode == 0, convert.stderr[-3000:]
    card = (output / "README.md").read_text()
    assert "  - google/siglip-tiny" in card and "  - Qwen/Qwen2-tiny" in card and str(root) not in card


# --- finding 3 (and 6, 9): one line, no traceback ------------------------------------------------------------


def damage_weights(path):
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes()[:500])


def drop_tensor(path):
    tensors = load_file(path / "model.safetensors")
    del tensors["model.projector.linear_1.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def empty_tokenizer(path):
    (path / "tokenizer.json").write_text("")


def lora_folder(path):
    shutil.move(path, path.with_name("tmp_merged"))
    path.mkdir()
    shutil.move(path.with_name("tmp_merged"), path / "merged")
    (path / "adapter_config.json").write_text("{}")


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (damage_weights, ["model.safetensors"]),
        (drop_tensor, ["missing", "model.projector.linear_1.weight"]),
        (empty_tokenizer, ["tokenizer.json is empty"]),
        (lora_folder, ["LoRA adapters", "merged"]),
    ],
    ids=["truncated weights", "missing tensor", "empty tokenizer", "lora folder"],
)
def test_broken_checkpoints_give_one_line(cli, root, tmp_path, damage, fragments):
    path = tmp_path / "ckpt"
    shutil.copytree(root / "ckpt", path)
    damage(path)
    args = [
        "generate",
        "--model",
        path,
        "--video",
        root / "clip.mp4",
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "2",
    ]
    assert_one_line_error(cli(*args), *fragments)


@pytest.mark.parametrize("how", ["--debug", "MAVORS_DEBUG"])
def test_debug_shows_the_traceback(root, tmp_path, how):
    path = tmp_path / "ckpt"
    shutil.copytree(root / "ckpt", path)
    damage_weights(path)
    args = ["generate", "--model", path, "--video", root / "clip.mp4", "--prompt", "Hi"]
    result = mavors(*args, env={"MAVORS_DEBUG": "1"}) if how == "MAVORS_DEBUG" else mavors("--debug", *args)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mavors generate: error:")


def test_inspect_with_a_siglip_checkpoint_is_one_line(cli, root, siglip_dir):
    assert_one_line_error(cli("inspect", root / "clip.mp4", "--model", siglip_dir), "not a complete Mavors")


def test_unreachable_image_url_is_one_line(cli, root):
    result = cli(
        "generate", "--model", root / "ckpt", "--image", "http://127.0.0.1:9/x.png", "--prompt", "Hi"
    )
    assert_one_line_error(result, "127.0.0.1:9/x.png")


# --- finding 4: convert ----------------------------------------------------------------------------------------


def snapshot(directory):
    """Every file under `directory` with its content hash and modification time."""
    return {
        os.path.relpath(os.path.join(d, name), directory): (
            hashlib.sha256(open(os.path.join(d, name), "rb").read()).hexdigest(),
            os.stat(os.path.join(d, name)).st_mtime_ns,
        )
        for d, _, names in os.walk(directory)
        for name in names
    }


def convert_args(siglip_dir, qwen_dir, output):
    return [
        *("convert", "--vision", siglip_dir, "--text", qwen_dir, "--output", output),
        *("--frames-per-chunk", "4", "--ifa-layers", "1", "--dtype", "float32"),
    ]


@pytest.mark.parametrize("occupied", ["non-empty directory", "file", "checkpoint"])
def test_convert_into_an_occupied_path_touches_nothing(cli, tmp_path, siglip_dir, qwen_dir, occupied):
    output = tmp_path / "out"
    if occupied == "file":
        output.write_text("my notes")
    else:
        output.mkdir()
        (output / ("config.json" if occupied == "checkpoint" else "notes.txt")).write_text("mine")
    (tmp_path / "out.partial").mkdir()  # a user directory that happens to have the old staging name
    (tmp_path / "out.partial" / "keep.txt").write_text("keep me")
    before = snapshot(tmp_path)
    start = time.monotonic()
    result = cli(*convert_args(siglip_dir, qwen_dir, output))
    assert_one_line_error(result, str(output))
    assert snapshot(tmp_path) == before  # every pre-existing file untouched, nothing added
    assert time.monotonic() - start < 5  # refused before any loading


def test_convert_keeps_a_user_partial_directory(cli, tmp_path, siglip_dir, qwen_dir):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "keep.txt").write_text("keep me")
    result = cli(*convert_args(siglip_dir, qwen_dir, tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out.partial" / "keep.txt").read_text() == "keep me"
    assert (tmp_path / "out" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial"]


def test_convert_refuses_a_qwen_directory_without_tokenizer(cli, tmp_path, siglip_dir):
    qwen = tmp_path / "qwen"
    save_qwen(qwen, build_tiny_tokenizer())
    for name in os.listdir(qwen):
        if name.startswith(
            ("tokenizer", "vocab", "merges", "special_tokens", "added_tokens", "chat_template")
        ):
            os.remove(qwen / name)
    result = cli(*convert_args(siglip_dir, qwen, tmp_path / "out"))
    assert_one_line_error(result, "no tokenizer")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, value",
    [("--ifa-layers", "-1"), ("--frames-per-chunk", "0"), ("--max-slices", "-2"), ("--fps", "nan")],
)
def test_convert_ranges_are_usage_errors(cli, tmp_path, siglip_dir, qwen_dir, flag, value):
    args = convert_args(siglip_dir, qwen_dir, tmp_path / "out")
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    result = cli(*args)
    assert result.returncode == 2 and flag in result.stderr and "Traceback" not in result.stderr


def test_convert_ctrl_c_is_clean_and_removes_only_its_own_output(
    cli, tmp_path, siglip_dir, qwen_dir, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MavorsForConditionalGeneration, "save_pretrained", interrupted)
    (tmp_path / "mine.txt").write_text("mine")
    result = cli(*convert_args(siglip_dir, qwen_dir, tmp_path / "out"))
    assert_one_line_error(result, "interrupted", status=130)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# --- finding 9: niah --plot without matplotlib -------------------------------------------------------------


def test_niah_plot_without_matplotlib_fails_before_evaluating(cli, root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    from transformers_mavors.evaluation import niah

    monkeypatch.setattr(
        niah, "run_needle_in_haystack", lambda *a, **k: pytest.fail("evaluated before failing")
    )
    result = cli("niah", "--model", root / "ckpt", "--chunks", "2", "--plot", tmp_path / "h.png")
    assert_one_line_error(result, "matplotlib")
    assert not (tmp_path / "h.png").exists()
