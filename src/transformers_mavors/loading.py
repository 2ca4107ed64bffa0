"""Finding and checking checkpoints before anything is built from them.

- `resolve_checkpoint`: a local directory, or a Hub id (`"org/name"`) resolved to a local snapshot by
  `huggingface_hub` (its cache, `revision`, offline mode via `HF_HUB_OFFLINE=1` or `local_files_only=True`).
  A missing id fails at once with one sentence, without retrying per file.
- `validate_checkpoint_files`: every JSON file parses and `model.safetensors` (or its shards) has a readable
  header, each error naming the file; a Mavors `config.json` has its `vision_config` and `text_config`, so a
  partial config is refused before the (possibly full-size) default towers are built.
- `check_tensor_shapes`: the checkpoint's tensor shapes against the model its config describes (built on the
  meta device, no memory), naming the tensors that differ.
- `report_loading_info`: missing, unexpected and non-finite tensors after loading, as a loud warning (Python) or
  a `ValueError` (`strict=True`, the CLI).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

# Files a snapshot download fetches: configs, tokenizer files, templates, weights (no duplicate .bin/.onnx/.gguf).
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py", "*.md"]
# JSON files of a checkpoint directory whose corruption transformers reports without the file's name.
JSON_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "added_tokens.json",
    "model.safetensors.index.json",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_repo_id(name: str) -> bool:
    """`org/name` or `name` with the characters the Hub allows (not a path: no leading `.`, `/` or `~`)."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".json", ".safetensors"))


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    what: str = "checkpoint",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local directory as is, or the local snapshot of a Hub repo id (downloaded unless offline).

    `FileNotFoundError` with one sentence when neither exists; `NotADirectoryError` for a file."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{what} path is not a directory: {str(path)!r}")
        return path
    name = os.fspath(name_or_path)
    if not looks_like_repo_id(name):
        raise FileNotFoundError(f"{what} directory not found: {name!r} (and it is not a Hub model id)")
    offline = local_files_only or constants.HF_HUB_OFFLINE
    cache = os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
    try:
        snapshot = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            allow_patterns=SNAPSHOT_PATTERNS,
        )
    except LocalEntryNotFoundError as error:
        where = (
            "offline mode (HF_HUB_OFFLINE=1) forbids downloading it"
            if offline
            else f"the Hub is unreachable ({error})"
        )
        raise FileNotFoundError(
            f"{what} {name!r} is not a local directory and not in the Hugging Face cache ({cache}); {where}"
        ) from error
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise FileNotFoundError(
            f"{what} {name!r} is not a local directory, and the Hub has no repository of that name you may read"
        ) from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(f"{what} {name!r} has no revision {revision!r} on the Hub") from error
    except (HFValidationError, HfHubHTTPError) as error:
        raise FileNotFoundError(f"{what} {name!r} cannot be fetched from the Hub: {error}") from error
    return Path(snapshot)


def read_json_file(path: Path) -> Any:
    """The parsed JSON of `path`; `ValueError` naming the file when it is empty, truncated or not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error})") from None
    if not text.strip():
        raise ValueError(f"{path} is empty (expected JSON)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (truncated or corrupt?): {error}") from None


def validate_checkpoint_files(
    directory: str | os.PathLike, require_mavors_config: bool = True, check_weights: bool = True
) -> None:
    """Check a checkpoint directory's JSON files and safetensors headers before anything is loaded from them."""
    directory = Path(directory)
    for name in JSON_FILES:
        if (directory / name).is_file():
            read_json_file(directory / name)
    config_path = directory / "config.json"
    if require_mavors_config and config_path.is_file():
        check_mavors_config_dict(read_json_file(config_path), config_path)
    for shard in safetensors_files(directory) if check_weights else ():
        read_safetensors_shapes(shard)


def check_mavors_config_dict(config: Any, path: Path) -> None:
    """`ValueError` unless a Mavors `config.json` is a dict with its `vision_config` and `text_config`."""
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if config.get("model_type") not in (None, "mavors"):
        return  # another model's checkpoint: its own loader reports what it needs
    missing = [key for key in ("vision_config", "text_config") if not isinstance(config.get(key), dict)]
    if missing:
        raise ValueError(
            f"{path} lacks {' and '.join(missing)}; a Mavors config.json holds both (without them the default "
            "full-size towers would be built)"
        )


def safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_file(index).get("weight_map", {})
        shards = sorted({directory / name for name in weight_map.values()})
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists shard(s) that are missing: {', '.join(missing)}")
        return shards
    single = directory / "model.safetensors"
    return [single] if single.is_file() else []


def read_safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header (no tensor data read); `ValueError` naming the file."""
    from safetensors import SafetensorError, safe_open

    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {error}"
        ) from error
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_length + end > size:
        raise ValueError(
            f"{path} is truncated: its header describes {8 + header_length + end} bytes, the file has {size}"
        )
    return shapes


def check_tensor_shapes(model_class: type, config: Any, directory: Path) -> None:
    """`ValueError` naming the tensors whose checkpoint shape differs from what `config` builds."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in safetensors_files(directory):
        shapes.update(read_safetensors_shapes(shard))
    if not shapes:
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
    return [
        name
        for name, parameter in model.named_parameters()
        if parameter.is_floating_point()
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
