"""Multi-process safety: every rank runs the vision tower the same number of times, whatever its batch holds.

The training hooks (`transformers_mavors.training.synchronize_vision_calls`, installed by the trainers) add a
zero-weighted dummy vision pass for each modality a training batch lacks, so a text-only rank and a video rank call
the tower equally often and touch the same parameters: DDP needs no `find_unused_parameters`, and ZeRO-3 does not
wait forever for a gather the other rank never makes (QwenLM #126, DeepSpeed #6438).

This file is also the worker of the 2-process run: `torchrun --nproc_per_node 2 tests/test_training_distributed.py
OUT_DIR` (gloo, CPU) trains with `MavorsTrainer` where rank 0 only ever sees text and rank 1 only video.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training_fixtures import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    handmade_batch,
    one_torch_thread,
    tiny_model,
    training_args,
)

from transformers_mavors.training import has_sharded_weights, synchronize_vision_calls


def parameter_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def count_vision_calls(model) -> list[int]:
    calls = [0]
    model.model.vision_model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# ---- in-process checks (fast) -------------------------------------------------------------------


def test_text_only_training_step_gives_every_parameter_a_gradient():
    model = tiny_model().train()
    synchronize_vision_calls(model)
    batch = handmade_batch([{"kind": "text", "seed": 0}, {"kind": "text", "seed": 1}])
    calls = count_vision_calls(model)
    model(**batch).loss.backward()
    missing = [name for name, param in model.named_parameters() if param.grad is None]
    assert missing == []
    assert calls[0] == 2  # one dummy image pass and one dummy video pass


@pytest.mark.parametrize("kinds", [("text",), ("video",), ("image",), ("video", "image")])
def test_vision_tower_runs_the_same_number_of_times_for_any_batch(kinds):
    model = tiny_model().train()
    synchronize_vision_calls(model)
    calls = count_vision_calls(model)
    model(**handmade_batch([{"kind": kind, "seed": i} for i, kind in enumerate(kinds)])).loss.backward()
    assert calls[0] == 2


def test_dummy_pass_does_not_change_the_loss():
    model = tiny_model()
    synchronize_vision_calls(model)
    batch = handmade_batch([{"kind": "text", "seed": 0}, {"kind": "video", "seed": 1}])
    with torch.no_grad():
        eval_loss = model.eval()(**batch).loss
    train_loss = model.train()(**batch).loss  # dropout is 0 in the tiny config: only the dummy term differs
    assert torch.equal(eval_loss, train_loss.detach())


def _ddp_text_only_steps(model, tmp_path, steps=2, dummy_media=True):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    synchronize_vision_calls(model, dummy_media=dummy_media)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model.train(), find_unused_parameters=False)
        batch = handmade_batch([{"kind": "text", "seed": 0}])
        for _ in range(steps):
            ddp(**batch).loss.backward()
    finally:
        dist.destroy_process_group()


def test_ddp_without_unused_parameter_search_accepts_text_only_batches(tmp_path):
    _ddp_text_only_steps(tiny_model(), tmp_path)


def test_ddp_fails_on_text_only_batches_without_the_dummy_pass(tmp_path):
    # the negative control: what the dummy pass prevents
    with pytest.raises(RuntimeError, match="(?i)unused parameters|finished reduction"):
        _ddp_text_only_steps(tiny_model(), tmp_path, dummy_media=False)


def count_encoder_calls(model) -> list[int]:
    calls = [0]
    model.model.vision_model.encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def count_aggregator_calls(model) -> list[int]:
    calls = [0]
    model.model.vision_model.aggregator.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_no_grad_prefill_runs_the_tower_for_absent_modalities_when_calls_are_synced(tmp_path):
    import torch.distributed as dist

    model = tiny_model().eval()
    synchronize_vision_calls(model, pad_calls=True)  # what sharded (ZeRO-3 / FSDP) weights switch on
    calls = count_vision_calls(model)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with torch.no_grad():
            model(**handmade_batch([{"kind": "text", "seed": 0}]))
    finally:
        dist.destroy_process_group()
    assert calls[0] == 2


def test_unsharded_inference_adds_no_vision_calls(tmp_path):
    """DDP-style replicas (the default) must not run extra passes: ranks generating independently would hang."""
    import torch.distributed as dist

    model = tiny_model().eval()
    synchronize_vision_calls(model)  # sharding detected from the weights: none here
    calls = count_vision_calls(model)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert not has_sharded_weights(model.model.vision_model)
        with torch.no_grad():
            model(**handmade_batch([{"kind": "text", "seed": 0}]))
    finally:
        dist.destroy_process_group()
    assert calls[0] == 0


# ---- the 2-process run ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(out_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=path)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
        str(out_dir),
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_process_run_with_a_text_only_rank_keeps_ranks_identical(tmp_path):
    start = time.perf_counter()
    result = _launch(tmp_path)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert reports[0]["kinds"] == ["text"] and reports[1]["kinds"] == ["video"]
    assert reports[0]["ddp"] and reports[1]["ddp"] and reports[0]["world_size"] == 2
    assert reports[0]["vision_calls"] == reports[1]["vision_calls"] > 0
    # rank 1's videos alternate between 2 and 9 chunks (1 or 3 ViT micro-batches); with synced calls every
    # vision layer still runs equally often on both ranks, as sharded (ZeRO-3 / FSDP) weights require
    assert reports[0]["encoder_calls"] == reports[1]["encoder_calls"] > 0
    assert reports[0]["aggregator_calls"] == reports[1]["aggregator_calls"] > 0
    assert reports[1]["video_chunks"] == [2, 9]
    assert reports[0]["final"] == reports[1]["final"]  # parameters bit-identical across ranks
    assert reports[0]["final"] != reports[0]["initial"]  # and they did train
    assert reports[0]["vision_changed"] and reports[1]["vision_changed"]
    print(f"2-process run: {elapsed:.1f} s, losses rank0 {reports[0]['losses']} rank1 {reports[1]['losses']}")


def _worker(out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import Dataset

    from transformers_mavors.training import MavorsTrainer, parameter_component

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    kind = "text" if rank == 0 else "video"

    class RankDataset(Dataset):
        """Rank 0 only ever gets text-only samples, rank 1 only video samples."""

        def __len__(self):
            return 16

        def __getitem__(self, index):
            return {"kind": kind, "seed": index, "chunks": 9 if index % 2 else 2}

    seen, chunks = set(), set()

    class RecordingCollator:
        dataset_columns = ("kind", "seed", "chunks")

        def __call__(self, examples):
            seen.update(example["kind"] for example in examples)
            chunks.update(example["chunks"] for example in examples if example["kind"] == "video")
            return handmade_batch(examples)

    model = tiny_model(seed=0)
    initial = parameter_digest(model)
    vision_before = {n: p.detach().clone() for n, p in model.named_parameters() if "vision_model" in n}
    calls = count_vision_calls(model)
    encoder_calls = count_encoder_calls(model)
    aggregator_calls = count_aggregator_calls(model)
    args = training_args(
        Path(out_dir) / f"trainer{rank}",
        max_steps=4,
        per_device_train_batch_size=1,
        learning_rate=1e-3,
        ddp_backend="gloo",
        ddp_find_unused_parameters=False,  # strict: any parameter without a gradient on a rank is an error
    )
    trainer = MavorsTrainer(
        model=model, args=args, train_dataset=RankDataset(), data_collator=RecordingCollator(), stage="2"
    )
    # DDP does not need equal per-layer call counts (sharded weights do); forcing them on proves they work
    synchronize_vision_calls(model, pad_calls=True)
    trainer.train()
    vision_changed = any(
        not torch.equal(p, vision_before[n])
        for n, p in model.named_parameters()
        if n in vision_before and parameter_component(n) in ("ive", "ifa")
    )
    report = {
        "kinds": sorted(seen),
        "ddp": isinstance(trainer.model_wrapped, DistributedDataParallel),
        "world_size": trainer.args.world_size,
        "vision_calls": calls[0],
        "encoder_calls": encoder_calls[0],
        "aggregator_calls": aggregator_calls[0],
        "video_chunks": sorted(chunks),
        "initial": initial,
        "final": parameter_digest(model),
        "vision_changed": vision_changed,
        "losses": [round(log["loss"], 4) for log in trainer.state.log_history if "loss" in log],
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    _worker(sys.argv[1])
