"""Finding and checking checkpoints before anything is built from them.

- `resolve_checkpoint`: a local directory, or a Hub id (`"org/name"`) resolved to a local snapshot by
  `huggingface_hub` (its cache, `revision`, offline mode via `HF_HUB_OFFLINE=1` or `local_files_only=True`).
  A missing id fails at once with one sentence, without retrying per file.
- `validate_checkpoint_files`: every JSON file parses and `model.safetensors` (or its shards) has a readable
  header, each error naming the file; a Mavors `config.json` has its `vision_config` and `text_config`, so a
  partial config is refused before the (possibly full-size) default towers are built.
  (These two, dependency-light, live in `transformers_mavors_planning.checkpoint`, re-exported here.)
- `check_tensor_shapes`: the checkpoint's tensor shapes against the model its config describes (built on the
  meta device, no memory), naming the tensors that differ.
- `report_loading_info`: missing, unexpected and non-finite tensors after loading, as a loud warning (Python) or
  a `ValueError` (`strict=True`, the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging

from transformers_mavors_planning.checkpoint import (  # noqa: F401  (re-exported: loading's public names)
    JSON_FILES,
    SNAPSHOT_PATTERNS,
    check_mavors_config_dict,
    looks_like_repo_id,
    read_json_file,
    read_safetensors_shapes,
    resolve_checkpoint,
    safetensors_files,
    validate_checkpoint_files,
)

logger = logging.get_logger(__name__)


def check_tensor_shapes(model_class: type, config: Any, directory: Path) -> None:
    """`ValueError` naming the tensors whose checkpoint shape differs from what `config` builds."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in safetensors_files(directory):
        shapes.update(read_safetensors_shapes(shard))
    if not shapes or is_deepspeed_zero3_enabled():
        # under ZeRO-3, building a module runs inside zero.Init (it partitions and initialises weights), which a
        # meta-device model cannot take; transformers' own loader still reports any shape mismatch there
        return
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in model_class(config).state_dict().items()}
    mismatched = [
        f"{key}: checkpoint {list(shape)} vs config {list(expected[key])}"
        for key, shape in shapes.items()
        if key in expected and expected[key] != shape
    ]
    if mismatched:
        shown = "; ".join(mismatched[:5]) + ("; ..." if len(mismatched) > 5 else "")
        raise ValueError(
            f"{directory / 'config.json'} does not describe the weights in {directory}: {len(mismatched)} tensor "
            f"shape(s) differ ({shown})"
        )


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters holding NaN or inf. Quantized weights (tensor subclasses such as
    torchao's, or integer storage such as bitsandbytes') are not read: their quantizers keep only finite values."""
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.is_floating_point()
        and type(parameter.data) is torch.Tensor
        and parameter.device.type != "meta"
        and not torch.isfinite(parameter).all()
    ]


def report_loading_info(model: torch.nn.Module, info: dict, source: str, strict: bool = False) -> None:
    """Missing, unexpected and non-finite tensors: a `ValueError` with `strict`, else a loud warning."""
    problems = []
    for label, key in (
        ("missing (randomly initialised)", "missing_keys"),
        ("unexpected (ignored)", "unexpected_keys"),
    ):
        names = sorted(info.get(key) or ())
        if names:
            problems.append(
                f"{len(names)} {label} tensor(s): {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
            )
    bad = non_finite_parameters(model)
    if bad:
        problems.append(
            f"{len(bad)} tensor(s) holding NaN or inf: {', '.join(bad[:8])}{', ...' if len(bad) > 8 else ''}"
        )
    if not problems:
        return
    message = f"the checkpoint {source} does not match {type(model).__name__}: " + "; ".join(problems)
    if strict:
        raise ValueError(message)
    logger.warning("%s\n%s\n%s", "!" * 80, message, "!" * 80)


__all__ = [
    "check_mavors_config_dict",
    "check_tensor_shapes",
    "looks_like_repo_id",
    "read_json_file",
    "read_safetensors_shapes",
    "report_loading_info",
    "resolve_checkpoint",
    "validate_checkpoint_files",
]
