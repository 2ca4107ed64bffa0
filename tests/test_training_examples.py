"""The example scripts (tiny offline demo runs, resuming) and the accelerate / DeepSpeed configs."""

import json
import re
import runpy
import shutil
from pathlib import Path

import pytest
import yaml
from test_training_fixtures import one_torch_thread  # noqa: F401 (autouse fixture)

from transformers_mavors import MavorsForConditionalGeneration

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *argv: str):
    return runpy.run_path(str(EXAMPLES / name))["main"](list(argv))


def losses_by_step(trainer) -> dict[int, float]:
    return {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}


@pytest.mark.parametrize("trainer_kind", ["trl", "transformers"])
def test_train_sft_example_resumes_where_it_stopped(tmp_path, trainer_kind):
    common = [
        "--tiny-demo",
        "--trainer",
        trainer_kind,
        "--stage",
        "2",
        "--max-steps",
        "8",
        "--save-steps",
        "4",
    ]
    common += ["--logging-steps", "1", "--learning-rate", "5e-3", "--batch-size", "2", "--num-workers", "0"]
    full = run_example("train_sft.py", *common, "--output-dir", str(tmp_path / "full"))
    # an interrupted run: only the step-4 checkpoint exists
    shutil.copytree(tmp_path / "full" / "checkpoint-4", tmp_path / "cut" / "checkpoint-4")
    resumed = run_example(
        "train_sft.py", *common, "--output-dir", str(tmp_path / "cut"), "--resume-from-checkpoint", "auto"
    )
    assert resumed.state.global_step == 8
    expected, got = losses_by_step(full), losses_by_step(resumed)
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), (step, expected, got)
    saved = MavorsForConditionalGeneration.from_pretrained(tmp_path / "cut")
    assert saved.config.model_type == "mavors"
    assert json.loads((tmp_path / "cut" / "train_results.json").read_text())["stage"] == "2"


def test_train_sft_example_with_lora_saves_adapter_and_merged_model(tmp_path):
    run_example(
        "train_sft.py",
        "--tiny-demo",
        "--max-steps",
        "2",
        "--lora",
        "llm+projector",
        "--merge-lora",
        "--num-workers",
        "0",
        "--output-dir",
        str(tmp_path),
    )
    assert (tmp_path / "adapter_config.json").exists()
    merged = MavorsForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert not any("lora" in key for key in merged.state_dict())


def test_train_dpo_example_runs_and_reports_margins(tmp_path):
    trainer = run_example(
        "train_dpo.py",
        "--tiny-demo",
        "--max-steps",
        "6",
        "--learning-rate",
        "1e-3",
        "--batch-size",
        "2",
        "--logging-steps",
        "1",
        "--num-workers",
        "0",
        "--output-dir",
        str(tmp_path),
    )
    summary = json.loads((tmp_path / "train_results.json").read_text())
    assert summary["last_margin"][0] > summary["first_margin"][0]
    assert trainer.ref_model is not None


def test_train_dpo_example_builds_the_papers_caption_pairs(tmp_path, caplog):
    run_example(
        "train_dpo.py",
        "--tiny-demo",
        "--caption-negatives",
        str(tmp_path / "demo-data" / "videos.txt"),
        "--caption-max-new-tokens",
        "24",
        "--only-build-pairs",
        "--output-dir",
        str(tmp_path),
    )
    records = [json.loads(line) for line in (tmp_path / "caption_pairs.jsonl").read_text().splitlines()]
    # pairs whose two captions are equal teach nothing: they are skipped and counted, the rest are written
    skipped = re.search(r"skipped (\d+) of 8 caption pairs", caplog.text)
    assert len(records) + (int(skipped.group(1)) if skipped else 0) == 8
    assert records, "every pair was skipped: the test no longer exercises the written pairs"
    assert all(r["chosen"][0]["content"] != r["rejected"][0]["content"] for r in records)
    assert all(r["quarter_order"] != [0, 1, 2, 3] for r in records)
    assert all((tmp_path / "demo-data" / r["rejected_video"]).exists() for r in records)
    shuffled = {Path(r["rejected_video"]).name for r in records}
    assert {path.name for path in (tmp_path / "shuffled-videos").iterdir()} == shuffled


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_load_and_leave_the_optimizer_to_the_trainer(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = EXAMPLES / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.num_processes == 8
    raw = yaml.safe_load(path.read_text())
    if name.startswith("zero"):
        ds_file = Path(__file__).resolve().parents[1] / raw["deepspeed_config"]["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        assert ds["zero_optimization"]["stage"] == int(name[-1])
        # a DeepSpeed optimizer / scheduler would replace the paper's parameter groups and stage schedule
        assert "optimizer" not in ds and "scheduler" not in ds
    if name == "fsdp":
        from test_training_fixtures import tiny_model

        wrapped = set(raw["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(","))
        layer_classes = {type(m).__name__ for m in tiny_model().modules()}
        assert wrapped <= layer_classes
        assert wrapped == set(MavorsForConditionalGeneration._no_split_modules)
