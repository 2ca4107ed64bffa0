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


@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_resume_from_the_middle_gives_the_uninterrupted_parameters(engine, tmp_path):
    straight = _train(engine, tmp_path / "straight")
    resumed = _train(engine, tmp_path / "resumed", "--resume", "2")
    assert (tmp_path / "resumed" / "trainer" / "checkpoint-2").is_dir()
    assert resumed[0]["digest"] == resumed[1]["digest"] == straight[0]["digest"]


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
