"""Worker of tests/test_training_engines.py: 4 steps of stage-2 SFT of a tiny Mavors under one engine.

    python tests/engine_worker.py single OUT                          # the one-process reference
    torchrun --nproc_per_node 2 tests/engine_worker.py ddp|zero2|zero3|fsdp2 OUT [--no-sync] [--resume N]
    torchrun --nproc_per_node 2 tests/engine_worker.py dpo-zero2 OUT

The dataset alternates text-only and video samples (videos of 2 and 9 chunks, so 1 and 3 ViT micro-batches), read
in order: with 2 ranks of one sample each, rank 0 only ever sees text and rank 1 only video; the one-process
reference takes both samples of a step with gradient accumulation, so it trains on the same global batch. Each rank
writes `rankR.json` (engine line, losses, digest of the full parameters, gathered for sharded engines) and rank 0
saves the consolidated checkpoint in `OUT/final`.

DDP, ZeRO-2 and ZeRO-3 run through `MavorsTrainer` (DeepSpeed from a config dict built from
examples/accelerate/zero{2,3}.json). FSDP2 runs `torch.distributed.fsdp.fully_shard` in a plain loop with the
trainer's optimizer groups, schedule and clipping: accelerate 1.15 does not run FSDP on CPU (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).parent))
from test_training_fixtures import handmade_batch, tiny_model, tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4
LEARNING_RATE = 1e-3
SHARD_LAYERS = ("SiglipEncoderLayer", "MavorsAggregatorLayer", "Qwen2DecoderLayer")


def sample(index: int) -> dict:
    """Even indices text-only, odd ones videos of 2 and 9 chunks in turn."""
    if index % 2 == 0:
        return {"kind": "text", "seed": index, "chunks": 0}
    return {"kind": "video", "seed": index, "chunks": 2 if (index // 2) % 2 == 0 else 9}


class EngineDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4 * STEPS

    def __getitem__(self, index):
        return sample(index)


class RecordingCollator:
    dataset_columns = ("kind", "seed", "chunks")

    def __init__(self):
        self.seen: list[tuple[str, int]] = []

    def __call__(self, examples):
        self.seen.extend((e["kind"], int(e["chunks"])) for e in examples)
        return handmade_batch(examples)


def digest(state: dict[str, torch.Tensor]) -> str:
    hasher = hashlib.sha256()
    for name in sorted(state):
        hasher.update(name.encode())
        hasher.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def deepspeed_config(stage: int) -> dict:
    config = json.loads((ROOT / "examples" / "accelerate" / f"zero{stage}.json").read_text())
    if stage == 3:
        # shard every tensor, however small (the "auto" threshold keeps a tiny model's weights whole)
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    return config


def full_parameters(model: torch.nn.Module, engine: str) -> dict[str, torch.Tensor]:
    """Every parameter in full on this rank (gathered from the shards for ZeRO-3 and FSDP2)."""
    if engine == "zero3":
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            return {n: p.detach().clone() for n, p in model.named_parameters()}
    if engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        names = {n for n, _ in model.named_parameters()}
        return {n: t for n, t in state.items() if n in names}
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def local_parameter_count(model: torch.nn.Module) -> int:
    """Parameter elements this rank holds between steps (its shard, for ZeRO-3 and FSDP2)."""
    total = 0
    for param in model.parameters():
        if hasattr(param, "ds_tensor"):
            total += param.ds_tensor.numel()
        elif hasattr(param, "to_local"):
            total += param.to_local().numel()
        else:
            total += param.numel()
    return total


def peak_memory_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_arguments(out: Path, engine: str, world_size: int, **overrides):
    from transformers import TrainingArguments

    from transformers_mavors.training import cpu_distributed_kwargs

    kwargs = dict(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2 if world_size == 1 else 1,  # same global batch of 2 samples
        learning_rate=LEARNING_RATE,
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        ddp_find_unused_parameters=False,
        ddp_timeout=int(os.environ.get("MAVORS_TEST_DDP_TIMEOUT", "1800")),
        **{"use_cpu": True, **cpu_distributed_kwargs()},
    )
    if engine in ("zero2", "zero3", "dpo-zero2"):
        kwargs["deepspeed"] = deepspeed_config(3 if engine == "zero3" else 2)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


class StopAfterStep(TrainerCallback):
    """Ends training after `step` optimizer steps, as an interrupted job would (the checkpoint is written first)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def run_trainer(engine: str, out: Path, sync: bool, resume_at: int | None) -> dict:
    from transformers_mavors.training import MavorsTrainer, synchronize_vision_calls

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    model = tiny_model(seed=0)
    collator = RecordingCollator()
    overrides = {}
    if resume_at is not None:
        overrides = dict(save_strategy="steps", save_steps=resume_at)
    args = training_arguments(out, engine, world_size, **overrides)
    trainer = MavorsTrainer(
        model=model, args=args, train_dataset=EngineDataset(), data_collator=collator, stage="2"
    )
    if not sync:  # the negative control: the protection this engine needs, switched off
        synchronize_vision_calls(model, pad_calls=False, dummy_media=engine not in ("ddp", "zero2"))
    if resume_at is not None:
        # the job stops right after its checkpoint at `resume_at` (same 4-step schedule), then a fresh trainer with
        # a differently initialised model continues from that checkpoint
        trainer.add_callback(StopAfterStep(resume_at))
        trainer.train()
        model = tiny_model(seed=1)  # the resumed run must not depend on the initial weights in memory
        args = training_arguments(out, engine, world_size, **overrides)
        trainer = MavorsTrainer(
            model=model, args=args, train_dataset=EngineDataset(), data_collator=collator, stage="2"
        )
        trainer.train(resume_from_checkpoint=str(out / "trainer" / f"checkpoint-{resume_at}"))
    else:
        trainer.train()
    line = next(c.line for c in trainer.callback_handler.callbacks if hasattr(c, "line"))
    trainer.save_model(str(out / "final"))
    return {
        "line": line,
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "digest": digest(full_parameters(trainer.model, engine)),
        "seen": collator.seen,
        "sharded": _sharded(trainer.model),
        "local_parameters": local_parameter_count(trainer.model),
    }


def _sharded(model) -> bool:
    from transformers_mavors.training import has_sharded_weights

    return has_sharded_weights(model.model.vision_model)


def build_fsdp2(seed: int, sync: bool):
    """A tiny Mavors sharded with `fully_shard` per layer, its optimizer (the trainer's groups) and schedule."""
    from torch.distributed.fsdp import fully_shard
    from transformers.optimization import get_scheduler

    from transformers_mavors.training import (
        mavors_parameter_groups,
        stage_lr_scheduler,
        synchronize_vision_calls,
    )

    model = tiny_model(seed=seed).train()
    for module in list(model.modules()):
        if type(module).__name__ in SHARD_LAYERS:
            fully_shard(module)
    fully_shard(model)
    # installed after sharding, as the trainer does after wrapping: the padding switches on from the DTensors
    synchronize_vision_calls(model, pad_calls=None if sync else False)
    optimizer = torch.optim.AdamW(mavors_parameter_groups(model, LEARNING_RATE, 0.0), lr=LEARNING_RATE)
    name, kwargs = stage_lr_scheduler("2", 0)
    scheduler = get_scheduler(
        name, optimizer, num_warmup_steps=0, num_training_steps=STEPS, scheduler_specific_kwargs=kwargs
    )
    return model, optimizer, scheduler


def save_fsdp2(directory: Path, model, optimizer, scheduler) -> None:
    """The resumable state: sharded model and optimizer (torch.distributed.checkpoint) and the schedule."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(directory))
    if torch.distributed.get_rank() == 0:
        torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    torch.distributed.barrier()


def load_fsdp2(directory: Path, model, optimizer, scheduler) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt"))


def run_fsdp2(out: Path, sync: bool, resume_at: int | None = None) -> dict:
    """FSDP2 in a plain loop with what `MavorsTrainer` uses: its groups, the stage-2 schedule, clipping at 1.

    With `resume_at`, the job saves its state after that many steps and stops; a fresh, differently initialised
    model then loads it and runs the remaining steps.
    """
    import torch.distributed as dist

    from transformers_mavors.training import describe_distributed

    timeout = int(os.environ.get("MAVORS_TEST_DDP_TIMEOUT", "1800"))
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model, optimizer, scheduler = build_fsdp2(0, sync)
    line = describe_distributed(model)
    if rank == 0:
        print(line, flush=True)
    seen, losses = [], []
    for step in range(STEPS):
        if step == resume_at:
            checkpoint = out / "fsdp2" / f"checkpoint-{step}"
            save_fsdp2(checkpoint, model, optimizer, scheduler)
            model, optimizer, scheduler = build_fsdp2(1, sync)  # must not depend on the weights in memory
            load_fsdp2(checkpoint, model, optimizer, scheduler)
        example = sample(step * world_size + rank)
        seen.append((example["kind"], int(example["chunks"])))
        batch = handmade_batch([example])
        # the loss of the global batch: token sums over all ranks' label tokens, as the trainer does
        tokens = (batch["labels"][:, 1:] != -100).sum()
        total = tokens.clone()
        dist.all_reduce(total)
        loss = model(**batch, num_items_in_batch=total).loss
        (loss * world_size).backward()  # FSDP averages gradients over ranks
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        logged = loss.detach().clone()
        dist.all_reduce(logged)
        losses.append(logged.item())
    state = full_parameters(model, "fsdp2")
    if rank == 0:
        unsharded = tiny_model(seed=0)
        unsharded.load_state_dict(state)
        unsharded.save_pretrained(out / "final")
    return {
        "line": line,
        "losses": losses,
        "digest": digest(state),
        "seen": seen,
        "sharded": True,
        "local_parameters": local_parameter_count(model),
    }


def run_dpo(out: Path) -> dict:
    """One short DPO run under ZeRO-2 (TRL builds the reference model through the Auto classes)."""
    from accelerate import PartialState
    from datasets import Dataset
    from trl import DPOConfig

    from transformers_mavors.training import MavorsDPOTrainer, cpu_distributed_kwargs
    from transformers_mavors.training.data import MavorsPreferenceCollator, load_mavors_dataset
    from transformers_mavors.training.demo import tiny_demo_model_and_processor, write_demo_data

    with PartialState(cpu=True, backend="gloo").main_process_first():
        demo = write_demo_data(out / "demo-data")
    model, processor = tiny_demo_model_and_processor(0)
    config = DPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=2,
        per_device_train_batch_size=1,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        deepspeed=deepspeed_config(2),
        **{"use_cpu": True, **cpu_distributed_kwargs()},
    )
    dataset = load_mavors_dataset([demo["dpo"]], demo["media_root"])
    assert isinstance(dataset, Dataset)
    trainer = MavorsDPOTrainer(
        model=model.train(),
        args=config,
        data_collator=MavorsPreferenceCollator(processor, demo["media_root"]),
        train_dataset=dataset,
        processing_class=processor,
        stage="dpo",
    )
    trainer.train()
    line = next(c.line for c in trainer.callback_handler.callbacks if hasattr(c, "line"))
    trainer.save_model(str(out / "final"))
    margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
    return {
        "line": line,
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "margins": margins,
        "digest": digest(full_parameters(trainer.model, "zero2")),
        "ref_digest": digest(full_parameters(trainer.ref_model, "zero2")),
        "seen": [],
        "sharded": False,
    }


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    engine, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sync = "--no-sync" not in argv
    resume_at = int(argv[argv.index("--resume") + 1]) if "--resume" in argv else None
    tokenizer()
    if engine == "fsdp2":
        report = run_fsdp2(out, sync, resume_at)
    elif engine == "dpo-zero2":
        report = run_dpo(out)
    else:
        report = run_trainer(engine, out, sync, resume_at)
    rank = int(os.environ.get("RANK", "0"))
    report["peak_memory_mib"] = round(peak_memory_mib(), 1)
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
