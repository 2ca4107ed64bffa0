"""Distributed engines really launched: DDP, DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2, each with 2 CPU processes (gloo).

Each run is `tests/engine_worker.py` under `torch.distributed.run` on 127.0.0.1: 4 steps of stage-2 SFT of a tiny
Mavors where rank 0 only ever sees text and rank 1 only videos of 2 and 9 chunks. Every run must

- say what it ran under (`distributed: engine=... world_size=2`, from the live process group and wrapped model);
- end with parameters bit-identical on both ranks (gathered from the shards for ZeRO-3 and FSDP2);
- log the loss curve of a one-process run on the same global batch (gradient accumulation over the same two
  samples) within `LOSS_RTOL`;
- leave a safetensors checkpoint that `from_pretrained` loads with those parameters and that generates.

Negative controls switch each hang protection off and must hang or fail within `NEGATIVE_TIMEOUT`.
DeepSpeed tests need the `deepspeed` extra (`.ci/engines/distributed.sh` runs this file in its environment).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil  # an accelerate dependency
import pytest
import torch
from engine_worker import digest, sample
from test_training_fixtures import handmade_batch

from transformers_mavors import MavorsForConditionalGeneration

HERE = Path(__file__).parent
ROOT = HERE.parent
WORKER = HERE / "engine_worker.py"
# float32 on one thread: reductions over 2 ranks sum in another order than gradient accumulation in one process,
# so the curves agree to rounding, not bit for bit
LOSS_RTOL = 1e-5
RUN_TIMEOUT = 300
NEGATIVE_TIMEOUT = 60  # the worker's gloo timeout is 30 s there (MAVORS_TEST_DDP_TIMEOUT)

pytestmark = pytest.mark.slow
# the whole file runs in the `deepspeed` extra's environment (.ci/engines/distributed.sh), once
pytest.importorskip("deepspeed", reason="needs the deepspeed extra (.ci/engines/distributed.sh)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra) -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(HERE), os.environ.get("PYTHONPATH")]))
    return dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=path,
        DS_ACCELERATOR="cpu",
        **extra,
    )


def _run(command: list[str], timeout: float, **env) -> tuple[int | None, str]:
    """Run `command` in its own process group; (return code or None on timeout, output). Kills the group."""
    process = subprocess.Popen(
        command,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        # torchrun starts each worker in a session of its own: kill the whole tree, workers first
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *args,
    ]


def _reports(out: Path, ranks=(0, 1)) -> list[dict]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in ranks]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict:
    """The reference: one process, the same two samples per step by gradient accumulation."""
    out = tmp_path_factory.mktemp("single")
    code, output = _run([sys.executable, str(WORKER), "single", str(out)], RUN_TIMEOUT)
    assert code == 0, output[-4000:]
    return _reports(out, (0,))[0]


def _train(engine: str, out: Path, *flags: str) -> list[dict]:
    start = time.perf_counter()
    code, output = _run(torchrun(str(WORKER), engine, str(out), *flags), RUN_TIMEOUT)
    assert code == 0, output[-6000:]
    print(f"{engine}: {time.perf_counter() - start:.1f} s")
    return _reports(out)


ENGINE_LINES = {
    "ddp": "distributed: engine=ddp world_size=2",
    "zero2": "distributed: engine=deepspeed-zero2 world_size=2",
    "zero3": "distributed: engine=deepspeed-zero3 world_size=2",
    "fsdp2": "distributed: engine=fsdp2 world_size=2",
}


@pytest.mark.parametrize("engine", list(ENGINE_LINES))
def test_engine_trains_like_one_process_with_a_text_rank_and_a_video_rank(engine, single_process, tmp_path):
    reports = _train(engine, tmp_path)
    assert [r["line"] for r in reports] == [ENGINE_LINES[engine]] * 2
    # rank 0 only text, rank 1 only videos of 2 and 9 chunks (1 and 3 ViT micro-batches)
    assert {kind for kind, _ in reports[0]["seen"]} == {"text"}
    assert {(kind, chunks) for kind, chunks in reports[1]["seen"]} == {("video", 2), ("video", 9)}
    assert reports[0]["sharded"] == reports[1]["sharded"] == (engine in ("zero3", "fsdp2"))
    # parameters identical across ranks (the full, gathered parameters for the sharded engines)
    assert reports[0]["digest"] == reports[1]["digest"]
    losses, expected = reports[0]["losses"], single_process["losses"]
    assert len(losses) == len(expected) == 4
    assert losses == pytest.approx(expected, rel=LOSS_RTOL)
    assert expected[-1] < expected[0]  # and it did learn

    # the consolidated safetensors checkpoint: loads with the trained parameters, and generates
    assert (tmp_path / "final" / "model.safetensors").is_file()
    reloaded = MavorsForConditionalGeneration.from_pretrained(tmp_path / "final").eval()
    assert digest(dict(reloaded.named_parameters())) == reports[0]["digest"]
    batch = handmade_batch([sample(1)])
    batch.pop("labels")
    with torch.no_grad():
        generated = reloaded.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3


def test_zero2_dpo_run(tmp_path):
    reports = _train("dpo-zero2", tmp_path)
    assert [r["line"] for r in reports] == [ENGINE_LINES["zero2"]] * 2
    assert reports[0]["digest"] == reports[1]["digest"]
    assert reports[0]["ref_digest"] == reports[1]["ref_digest"] != reports[0]["digest"]  # frozen reference
    assert len(reports[0]["losses"]) == 2 and all(loss == loss for loss in reports[0]["losses"])
    assert (tmp_path / "final" / "model.safetensors").is_file()
    MavorsForConditionalGeneration.from_pretrained(tmp_path / "final")


@pytest.mark.parametrize("engine", ["zero2", "zero3", "fsdp2"])
def test_resume_from_the_middle_gives_the_uninterrupted_parameters(engine, tmp_path):
    """Stop after step 2 of 4 with its checkpoint, continue from it with a differently initialised model."""
    straight = _train(engine, tmp_path / "straight")
    resumed = _train(engine, tmp_path / "resumed", "--resume", "2")
    # the trainer's checkpoint (DeepSpeed's state inside) or, for FSDP2, torch.distributed.checkpoint's shards
    assert (tmp_path / "resumed" / ("fsdp2" if engine == "fsdp2" else "trainer") / "checkpoint-2").is_dir()
    assert resumed[0]["losses"] == straight[0]["losses"]
    assert resumed[0]["digest"] == resumed[1]["digest"] == straight[0]["digest"]


# ---- the example scripts, unchanged, under the shipped accelerate configs -------------------------------------


def accelerate_launch(config: str, script: str, out: Path, *flags: str) -> list[str]:
    """`accelerate launch --config_file examples/accelerate/<config>.yaml --num_processes 2 <script> ...`."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "examples" / "accelerate" / f"{config}.yaml"),
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        str(ROOT / "examples" / script),
        "--output-dir",
        str(out),
        "--max-steps",
        "2",
        "--logging-steps",
        "1",
        "--num-workers",
        "0",
        *flags,
    ]


def _launch_example(config: str, script: str, out: Path, *flags: str) -> dict:
    """Run the example; check the engine line (rank 0 only), the finished steps, the checkpoints; the log."""
    start = time.perf_counter()
    code, output = _run(accelerate_launch(config, script, out, *flags), RUN_TIMEOUT)
    assert code == 0, output[-6000:]
    print(f"{config} {script}: {time.perf_counter() - start:.1f} s")
    assert output.count(ENGINE_LINES[config]) == 1, output[-3000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    state["zero_init_line"] = output.count("zero.Init: the model was loaded straight into ZeRO-3 shards")
    assert state["global_step"] == 2
    assert (out / "train_results.json").is_file()
    if config.startswith("zero"):  # the engine's own resumable checkpoint, next to the safetensors
        assert (out / "checkpoint-2" / "global_step2").is_dir()
    return state


def _reload_and_generate(directory: Path) -> MavorsForConditionalGeneration:
    """`from_pretrained` of a consolidated checkpoint, then greedy generation of a video prompt."""
    assert (directory / "model.safetensors").is_file()
    model = MavorsForConditionalGeneration.from_pretrained(directory).eval()
    batch = handmade_batch([sample(1)])
    batch.pop("labels")
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3
    return model


def _losses(state: dict) -> list[float]:
    return [log["loss"] for log in state["log_history"] if "loss" in log]


@pytest.fixture(scope="module")
def zero2_sft_example(tmp_path_factory) -> tuple[Path, dict]:
    """zero2.yaml, --tiny-demo: the reference of the ZeRO-3 run below (both in float32; ddp.yaml asks for bf16)."""
    out = tmp_path_factory.mktemp("zero2-sft")
    return out, _launch_example("zero2", "train_sft.py", out, "--tiny-demo")


@pytest.mark.parametrize("config", ["ddp", "zero2", "zero3"])
def test_sft_example_runs_unchanged_under_its_accelerate_config(config, zero2_sft_example, tmp_path):
    if config == "zero2":
        out, state = zero2_sft_example
    else:
        out, state = tmp_path, _launch_example(config, "train_sft.py", tmp_path, "--tiny-demo")
    assert state["zero_init_line"] == (config == "zero3")  # zero3.yaml sets zero3_init_flag: true
    assert len(_losses(state)) == 2
    trained = _reload_and_generate(out)
    if (
        config != "zero3"
    ):  # ZeRO-3 builds the demo model under zero.Init: another random draw of the same init
        from transformers_mavors.training.demo import tiny_demo_model_and_processor

        initial, _ = tiny_demo_model_and_processor(0)
        assert digest(dict(trained.named_parameters())) != digest(dict(initial.named_parameters()))


def test_zero3_example_loads_a_checkpoint_into_shards_and_trains_like_zero2(zero2_sft_example, tmp_path):
    """`--model` under zero3.yaml (`zero3_init_flag: true`): `from_pretrained` runs under `zero.Init` (the
    example builds its arguments first, which joins the process group); the run then follows ZeRO-2's curve
    from the same initial model and ends with the same consolidated parameters."""
    from transformers_mavors.training.demo import tiny_demo_model_and_processor

    reference_out, reference_state = zero2_sft_example
    source = tmp_path / "source"
    model, processor = tiny_demo_model_and_processor(0)  # the model the ZeRO-2 --tiny-demo run started from
    model.save_pretrained(source)
    processor.save_pretrained(source)
    demo = reference_out / "demo-data"
    flags = ("--model", str(source), "--train-file", str(demo / "sft.jsonl"), "--media-root", str(demo))
    state = _launch_example("zero3", "train_sft.py", tmp_path / "run", *flags)
    assert state["zero_init_line"] == 1  # rank 0 says the weights went straight into shards
    assert _losses(state) == pytest.approx(_losses(reference_state), rel=LOSS_RTOL)
    reloaded = dict(_reload_and_generate(tmp_path / "run").named_parameters())
    expected = dict(MavorsForConditionalGeneration.from_pretrained(reference_out).named_parameters())
    assert reloaded.keys() == expected.keys()
    for name, param in reloaded.items():
        torch.testing.assert_close(param, expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_dpo_example_runs_unchanged_under_its_accelerate_config(config, tmp_path):
    state = _launch_example(config, "train_dpo.py", tmp_path, "--tiny-demo")
    assert state["zero_init_line"] == (config == "zero3")
    logs = [log for log in state["log_history"] if "rewards/margins" in log]
    assert len(logs) == 2
    # the first step's reference is the policy itself (a frozen copy, shard by shard under ZeRO-3's zero.Init)
    assert logs[0]["rewards/chosen"] == logs[0]["rewards/rejected"] == 0.0
    assert logs[1]["rewards/chosen"] != 0.0  # and the policy moved away from it
    _reload_and_generate(tmp_path)


# ---- negative controls: each protection switched off must hang or fail --------------------------------------


@pytest.mark.parametrize(
    "engine, protection",
    [
        ("ddp", "blank items for absent modalities"),
        ("zero3", "equal ViT / IFA call counts"),
        ("fsdp2", "equal ViT / IFA call counts"),
    ],
)
def test_without_its_protection_the_run_hangs_or_fails(engine, protection, tmp_path):
    command = torchrun(str(WORKER), engine, str(tmp_path), "--no-sync")
    code, output = _run(command, NEGATIVE_TIMEOUT, MAVORS_TEST_DDP_TIMEOUT="30")
    assert code != 0, f"{engine} finished without {protection}: the protection is not what keeps it running"
    assert not (tmp_path / "rank0.json").exists() or not (tmp_path / "rank1.json").exists()


# ---- the plain CPU launch of the docs -----------------------------------------------------------------------


def test_plain_torchrun_of_the_docs_is_one_ddp_job(tmp_path):
    command = torchrun(
        str(ROOT / "examples" / "train_sft.py"),
        "--tiny-demo",
        "--output-dir",
        str(tmp_path),
        "--max-steps",
        "2",
        "--num-workers",
        "0",
    )
    code, output = _run(command, RUN_TIMEOUT)
    assert code == 0, output[-4000:]
    assert output.count("distributed: engine=ddp world_size=2") == 1  # rank 0 only
    assert (tmp_path / "model.safetensors").is_file()


def test_a_launch_that_would_train_two_copies_stops_with_the_fix(tmp_path):
    script = tmp_path / "copies.py"
    script.write_text(
        "from transformers import TrainingArguments\n"
        "from transformers_mavors.training import MavorsTrainer, check_launch\n"
        f"args = TrainingArguments(output_dir={str(tmp_path / 'out')!r}, report_to=[])\n"
        "check_launch(args)\n"
    )
    code, output = _run(torchrun(str(script)), RUN_TIMEOUT)
    assert code not in (0, None)
    assert "use_cpu=True and ddp_backend='gloo'" in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without GPUs")
def test_fsdp_config_on_cpu_stops_at_once_with_a_one_line_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "examples" / "accelerate" / "fsdp.yaml"),
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(_free_port()),
        str(ROOT / "examples" / "train_sft.py"),
        "--tiny-demo",
        "--output-dir",
        str(tmp_path),
        "--max-steps",
        "2",
        "--num-workers",
        "0",
    ]
    code, output = _run(command, RUN_TIMEOUT)
    assert code not in (0, None)
    assert "error: FSDP on CPU: accelerate 1.15 does not run FSDP without GPUs" in output
    assert (
        "Traceback" not in output.split("error: FSDP on CPU")[0]
    )  # our line comes before any launcher report
    assert not (tmp_path / "model.safetensors").exists()
