"""What a training run really runs under: the engine, read from the live process group and the wrapped model.

A launcher (`torchrun`, `accelerate launch`) only starts processes; whether they form one job depends on what
reaches `TrainingArguments`. On a machine without GPUs, `torchrun --nproc_per_node 2` with default arguments
starts two *independent* single-process runs (transformers only joins the process group on CPU when
`use_cpu=True` and a `ddp_backend` are given). This module makes that visible and hard to get wrong:

- `cpu_distributed_kwargs()`: the `TrainingArguments` fields a CPU launch needs (`use_cpu=True`,
  `ddp_backend="gloo"`), empty when there is nothing to add; the example scripts pass them.
- `check_launch(args)`: raises `DistributedSetupError` naming the fix when the launcher started several processes
  but the arguments see one, or when FSDP is asked for on CPU (accelerate 1.15 silently runs something else).
- `is_zero3_partitioned(model)`: whether a model was built straight into ZeRO-3 shards (`zero.Init`).
- `detect_engine(wrapped)`: `"single"`, `"ddp"`, `"deepspeed-zero2"`, `"deepspeed-zero3"` or `"fsdp2"`.
- `DistributedReportCallback`: prints `distributed: engine=<engine> world_size=<N>` on rank 0 when training
  starts; `MavorsTrainingMixin` adds it to every trainer.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import TrainerCallback

ENGINES = ("single", "ddp", "deepspeed-zero1", "deepspeed-zero2", "deepspeed-zero3", "fsdp1", "fsdp2")


class DistributedSetupError(RuntimeError):
    """The processes a launcher started would not train as one job (see the message for the fix)."""


def launched_world_size() -> int:
    """How many processes the launcher started (`WORLD_SIZE`, set by torchrun and accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def live_world_size() -> int:
    """Size of the default process group this process has joined, 1 outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def cpu_distributed_kwargs() -> dict:
    """`TrainingArguments` fields that make a multi-process launch on a GPU-less machine one job.

    Empty with one process or with GPUs (there the defaults already join the NCCL process group).
    """
    if launched_world_size() > 1 and not torch.cuda.is_available():
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {}


def check_launch(args) -> None:
    """Raise `DistributedSetupError` when the launch would not train as one distributed job."""
    launched = launched_world_size()
    if launched > 1 and _fsdp_requested() and not torch.cuda.is_available():
        raise DistributedSetupError(
            "FSDP on CPU: accelerate 1.15 does not run FSDP without GPUs (it would silently fall back to DDP); "
            "use examples/accelerate/ddp.yaml, zero2.yaml or zero3.yaml on CPU, or run FSDP on GPUs"
        )
    if launched > 1 and args.world_size != launched:
        raise DistributedSetupError(
            f"the launcher started {launched} processes but TrainingArguments sees world_size={args.world_size}, "
            "so each would train its own copy; on CPU pass use_cpu=True and ddp_backend='gloo' "
            "(transformers_mavors.training.cpu_distributed_kwargs())"
        )


def _unwrap(wrapped: nn.Module) -> nn.Module:
    return getattr(wrapped, "module", wrapped)


def _is_fsdp2(module: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover (torch < 2.6)
        FSDPModule = ()  # noqa: N806
    if any(isinstance(m, FSDPModule) for m in module.modules()):
        return True
    return any(type(p).__name__ == "DTensor" for p in module.parameters())


def detect_engine(wrapped: nn.Module) -> str:
    """The engine `wrapped` (the trainer's `model_wrapped`) trains under, one of `ENGINES`.

    Read from the objects themselves: a `DeepSpeedEngine` and its ZeRO stage, FSDP2 (`fully_shard`) modules or
    DTensor parameters, an FSDP1 wrapper, a `DistributedDataParallel` wrapper; `"single"` otherwise.
    """
    if type(wrapped).__name__ == "DeepSpeedEngine":
        return f"deepspeed-zero{int(wrapped.zero_optimization_stage())}"
    if _is_fsdp2(wrapped):
        return "fsdp2"
    if type(wrapped).__name__ == "FullyShardedDataParallel":
        return "fsdp1"
    if isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return "ddp"
    inner = _unwrap(wrapped)
    if inner is not wrapped:
        return detect_engine(inner)
    return "single"


def is_zero3_partitioned(model: nn.Module) -> bool:
    """Whether `model` holds ZeRO-3 shards, as built under `deepspeed.zero.Init` (`zero3_init_flag`)."""
    return any(hasattr(param, "ds_id") for param in model.parameters())


def describe_distributed(wrapped: nn.Module) -> str:
    """`distributed: engine=<engine> world_size=<N>` for `wrapped`, the world size from the live process group."""
    return f"distributed: engine={detect_engine(wrapped)} world_size={live_world_size()}"


class DistributedReportCallback(TrainerCallback):
    """Prints `describe_distributed(trainer.model_wrapped)` on rank 0 when training starts.

    Also refuses, at that point, a world of several processes whose model nobody wrapped (it would train
    independent copies).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.line: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        wrapped = self.trainer.model_wrapped
        engine = detect_engine(wrapped)
        if live_world_size() > 1 and engine == "single":
            raise DistributedSetupError(
                f"{live_world_size()} processes joined the process group but the model is not wrapped by "
                "DDP, DeepSpeed or FSDP: each rank would train its own copy"
            )
        self.line = describe_distributed(wrapped)
        if state.is_world_process_zero:
            print(self.line, flush=True)


__all__ = [
    "ENGINES",
    "DistributedReportCallback",
    "DistributedSetupError",
    "check_launch",
    "cpu_distributed_kwargs",
    "describe_distributed",
    "detect_engine",
    "is_zero3_partitioned",
    "launched_world_size",
    "live_world_size",
]
