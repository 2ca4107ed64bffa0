"""The `mavors` console script, run in subprocesses as a user would."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import mavors
from transformers import AutoProcessor, pipeline

import transformers_mavors
from transformers_mavors import num_visual_tokens


@pytest.fixture(scope="module")
def video_path(sample_video):
    return sample_video(40)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, siglip_dir, qwen_dir):
    output = tmp_path_factory.mktemp("converted") / "mavors-tiny"
    result = mavors(
        "convert",
        "--vision",
        siglip_dir,
        "--text",
        qwen_dir,
        "--output",
        output,
        "--frames-per-chunk",
        "4",
        "--ifa-layers",
        "1",
        "--fps",
        "4",
        "--max-chunks",
        "6",
        "--dtype",
        "float32",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


def test_convert_writes_a_loadable_checkpoint_with_a_model_card(converted):
    config = json.loads((converted / "config.json").read_text())
    assert config["vision_config"]["frames_per_chunk"] == 4
    assert config["vision_config"]["ifa_num_hidden_layers"] == 1
    processor_config = json.loads((converted / "processor_config.json").read_text())
    assert processor_config["video_processor"]["fps"] == 4
    assert processor_config["video_processor"]["frames_per_chunk"] == 4
    card = (converted / "README.md").read_text()
    assert "pipeline_tag: video-text-to-text" in card and "library_name: transformers" in card
    assert "| frames per chunk (F) | 4 |" in card and "arXiv:2504.10068" in card
    assert not list(converted.parent.glob("*.partial"))


def test_generate_prints_what_the_pipeline_answers(converted, video_path):
    result = mavors(
        "generate",
        "--model",
        converted,
        "--video",
        video_path,
        "--prompt",
        "Describe the video.",
        "--max-new-tokens",
        "6",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    pipe = pipeline("video-text-to-text", model=str(converted))
    expected = pipe(
        videos=video_path,
        text="Describe the video.",
        max_new_tokens=6,
        do_sample=False,
        return_full_text=False,
    )[0]["generated_text"]
    assert result.stdout.strip() == expected.strip()
    assert "Decoding" in result.stderr  # the progress bar


def test_generate_in_process_shows_progress_without_changing_the_processor_for_others(
    converted, video_path, capsys
):
    """The command line shows every video's decoding progress through a call option, not a module global: after a
    `mavors generate` in this process, a short clip processed elsewhere decodes without a bar."""
    from transformers_mavors import video_processing_mavors
    from transformers_mavors_cli import main

    args = ["generate", "--model", str(converted), "--video", str(video_path), "--prompt", "Hi"]
    assert main([*args, "--max-new-tokens", "2"]) == 0
    assert "Decoding" in capsys.readouterr().err
    assert video_processing_mavors.PROGRESS_BAR_MIN_SECONDS == 60.0
    AutoProcessor.from_pretrained(converted).video_processor(str(video_path))
    assert "Decoding" not in capsys.readouterr().err


def test_generate_streams(converted, video_path):
    result = mavors(
        "generate",
        "--model",
        converted,
        "--video",
        video_path,
        "--prompt",
        "Describe.",
        "--max-new-tokens",
        "4",
        "--stream",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    plain = mavors(
        "generate",
        "--model",
        converted,
        "--video",
        video_path,
        "--prompt",
        "Describe.",
        "--max-new-tokens",
        "4",
    )
    assert result.stdout.strip() == plain.stdout.strip()


def test_inspect_reports_chunks_positions_and_tokens(converted, video_path):
    result = mavors("inspect", video_path, "--model", converted, "--fps", "4", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    # 40 frames at 8 fps = 5 s; at 4 fps -> 20 frames -> 5 chunks of 4; positions floor(t * 4 / 4)
    assert report["chunks"] == 5
    assert [row["position"] for row in report["chunk_table"]] == [0, 1, 2, 3, 4]
    assert report["total_tokens"] == report["chunks"] * report["tokens_per_chunk"]
    squeezed = json.loads(
        mavors(
            "inspect", video_path, "--model", converted, "--fps", "4", "--max-chunks", "2", "--json"
        ).stdout
    )
    assert squeezed["chunks"] == 2 and squeezed["playback_speed"] > 1
    assert squeezed["chunk_table"][-1]["position"] > 1  # original-timeline positions survive the speed-up
    table = mavors("inspect", video_path, "--model", converted)
    assert table.returncode == 0 and "visual tokens" in table.stdout


@pytest.mark.parametrize("max_chunks", [None, 2], ids=["normal", "accelerated"])
def test_inspect_plan_equals_what_the_processor_does_to_the_file(converted, video_path, max_chunks):
    options = {"fps": 4} if max_chunks is None else {"fps": 4, "max_chunks": max_chunks}
    flags = [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    result = mavors("inspect", video_path, "--model", converted, *flags, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    processor = AutoProcessor.from_pretrained(converted)
    out = processor(text=processor.video_token, videos=video_path, return_metadata=True, **options)
    meta, grid = out["video_metadata"][0], out["video_grid_thw"][0].tolist()
    assert report["chunks"] == grid[0] and report["frame_size"] == [meta.resized_width, meta.resized_height]
    assert [row["position"] for row in report["chunk_table"]] == out["video_chunk_positions"].tolist()
    assert [(row["start_s"], row["end_s"]) for row in report["chunk_table"]] == [
        (round(start, 3), round(end, 3)) for start, end in meta.chunk_timestamps
    ]
    assert (report["frames_kept"], report["playback_speed"], report["duration_s"]) == (
        meta.num_frames,
        meta.playback_speed,
        round(meta.duration, 3),
    )
    assert report["total_tokens"] == out["input_ids"][0].count(processor.video_token_id)
    assert (report["playback_speed"] > 1) == (max_chunks is not None)


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["generate", "--model", "m", "--video", "v.mp4", "--prompt", "p", "--fps", "0"],
            "--fps: must be > 0",
        ),
        (["inspect", "v.mp4", "--max-chunks", "-3"], "--max-chunks: must be >= 1"),
        (
            ["generate", "--model", "m", "--prompt", "p", "--frobnicate"],
            "unrecognized arguments: --frobnicate",
        ),
        (["convert", "--vision", "a"], "the following arguments are required"),
    ],
)
def test_bad_flags_are_usage_errors(args, message):
    result = mavors(*args)
    assert result.returncode == 2
    assert message in result.stderr and "usage: mavors" in result.stderr


def test_generate_on_an_incomplete_checkpoint_names_what_is_missing(tmp_path, video_path):
    (tmp_path / "config.json").write_text("{}")
    result = mavors("generate", "--model", tmp_path, "--video", video_path, "--prompt", "p")
    assert result.returncode == 1
    assert "model.safetensors" in result.stderr and "processor_config.json" in result.stderr


def test_generate_on_an_unreadable_video_is_a_clean_error(converted, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    result = mavors("generate", "--model", converted, "--video", broken, "--prompt", "p")
    assert result.returncode == 1
    assert "broken.mp4" in result.stderr and "Traceback" not in result.stderr


HEAVY_MODULES = ("torch", "transformers", "transformers_mavors")


def console_script(*args) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the console script's `main` in a fresh interpreter; returns the process and which of
    `HEAVY_MODULES` were imported by the time it exited (read from `sys.modules` at exit)."""
    code = (
        "import atexit, json, sys\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "atexit.register(lambda: print(json.dumps({m: m in sys.modules for m in heavy}), file=sys.stderr))\n"
        "from transformers_mavors_cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    imported = json.loads(result.stderr.strip().splitlines()[-1])
    return result, imported


@pytest.mark.parametrize(
    "args,returncode,stream,expected",
    [
        (["--help"], 0, "stdout", "generate"),
        (["generate", "--help"], 0, "stdout", "--token-compression-threshold"),
        (["--version"], 0, "stdout", f"mavors {transformers_mavors.__version__}"),
        ([], 2, "stderr", "the following arguments are required: COMMAND"),
        (["inspect", "v.mp4", "--max-chunks", "-3"], 2, "stderr", "--max-chunks: must be >= 1"),
        (["generate", "--prompt", "p"], 2, "stderr", "one of --video or --image is required"),
        (
            ["generate", "--video", "v.mp4", "--prompt", "p", "--token-compression-threshold", "nan"],
            2,
            "stderr",
            "--token-compression-threshold",
        ),
    ],
    ids=["help", "command-help", "version", "no-command", "bad-int", "no-media", "bad-threshold"],
)
def test_help_version_and_usage_errors_import_neither_torch_nor_transformers(
    args, returncode, stream, expected
):
    result, imported = console_script(*args)
    assert result.returncode == returncode, result.stderr[-2000:]
    assert expected in getattr(result, stream)
    assert imported == dict.fromkeys(HEAVY_MODULES, False)


def test_a_command_does_import_the_package():
    """The check above can fail: a command that runs loads the package (and torch) through the same script.
    (`inspect` no longer does, see below; `generate` still must.)"""
    result, imported = console_script(
        "generate", "--model", "missing-dir", "--video", "v.mp4", "--prompt", "p"
    )
    assert result.returncode == 1 and "missing-dir" in result.stderr
    assert imported == dict.fromkeys(HEAVY_MODULES, True)


@pytest.fixture(scope="module")
def accelerating_checkpoint(converted, tmp_path_factory):
    """`converted` without its weights (inspect does not need them), its video processor saved with fps 6 and
    max_chunks 2: non-default options that squeeze the 5 s clip (30 frames) into 2 chunks of 4."""
    directory = tmp_path_factory.mktemp("accelerating") / "ckpt"
    shutil.copytree(converted, directory, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((directory / "processor_config.json").read_text())
    config["video_processor"].update(fps=6.0, max_chunks=2)
    (directory / "processor_config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("source", ["defaults", "saved options"])
def test_inspect_imports_neither_torch_nor_transformers_and_plans_as_the_processor(
    source, video_path, accelerating_checkpoint
):
    flags = ["--model", str(accelerating_checkpoint)] if source == "saved options" else []
    result, imported = console_script("inspect", str(video_path), *flags, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert imported == dict.fromkeys(HEAVY_MODULES, False)
    report = json.loads(result.stdout)

    if source == "saved options":
        processor = AutoProcessor.from_pretrained(accelerating_checkpoint)
        assert (processor.video_processor.fps, processor.video_processor.max_chunks) == (6.0, 2)
        out = processor(text=processor.video_token, videos=str(video_path), return_metadata=True)
        video_tokens = out["input_ids"][0].count(processor.video_token_id)
    else:
        video_processor = transformers_mavors.MavorsVideoProcessor()
        out = video_processor(str(video_path), return_metadata=True)
        video_tokens = num_visual_tokens(
            out["video_grid_thw"][0].tolist(), video_processor.spatial_merge_size
        )
    meta, grid = out["video_metadata"][0], out["video_grid_thw"][0].tolist()
    assert report["chunks"] == grid[0] and report["frame_size"] == [meta.resized_width, meta.resized_height]
    assert [row["position"] for row in report["chunk_table"]] == out["video_chunk_positions"].tolist()
    assert [(row["start_s"], row["end_s"]) for row in report["chunk_table"]] == [
        (round(start, 3), round(end, 3)) for start, end in meta.chunk_timestamps
    ]
    assert (report["fps"], report["frames_kept"], report["playback_speed"]) == (
        meta.fps,
        meta.num_frames,
        meta.playback_speed,
    )
    assert report["total_tokens"] == video_tokens
    assert (report["playback_speed"] > 1) == (source == "saved options")
