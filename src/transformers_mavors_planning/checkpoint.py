"""Finding a Mavors checkpoint, checking its files and reading the video-processor options it saved.

- `resolve_checkpoint`: a local directory, or a Hub id (`"org/name"`) resolved to a local snapshot by
  `huggingface_hub` (its cache, `revision`, offline mode via `HF_HUB_OFFLINE=1` or `local_files_only=True`).
  A missing id fails at once with one sentence, without retrying per file.
- `validate_checkpoint_files`: every JSON file parses and `model.safetensors` (or its shards) has a readable
  header, each error naming the file; a Mavors `config.json` has its `vision_config` and `text_config`, so a
  partial config is refused before the (possibly full-size) default towers are built.
- `check_checkpoint_dir`: both, plus the files a complete checkpoint has, named when missing.
- `read_video_processor_dict`: the options the video processor saved, found where transformers looks for them.

Only the standard library, huggingface_hub and (for weight headers) safetensors: `mavors inspect --model` uses
this module without torch; `transformers_mavors.loading` and `transformers_mavors.hub` re-export it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

# Files a snapshot download fetches: configs, tokenizer files, templates, weights (no duplicate .bin/.onnx/.gguf).
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py", "*.md"]
# What checking a checkpoint without its weights needs: the configs and the JSON tokenizer files.
CONFIG_PATTERNS = ["*.json"]
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
# A complete checkpoint has one of these weight files and one of these tokenizer files.
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def looks_like_repo_id(name: str) -> bool:
    """`org/name` or `name` with the characters the Hub allows (not a path: no leading `.`, `/` or `~`)."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".json", ".safetensors"))


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    what: str = "checkpoint",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    allow_patterns: list[str] | None = None,
) -> Path:
    """A local directory as is, or the local snapshot of a Hub repo id (downloaded unless offline): the files matching
    `allow_patterns`, by default `SNAPSHOT_PATTERNS`.

    `FileNotFoundError` with one sentence when neither exists; `NotADirectoryError` for a file."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{what} path is not a directory: {str(path)!r}")
        return path
    name = os.fspath(name_or_path)
    if not looks_like_repo_id(name):
        raise FileNotFoundError(f"{what} directory not found: {name!r} (and it is not a Hub model id)")
    # imported here: a local directory needs none of it (a fraction of a second)
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = local_files_only or constants.HF_HUB_OFFLINE
    cache = os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
    try:
        snapshot = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            allow_patterns=allow_patterns or SNAPSHOT_PATTERNS,
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


def check_checkpoint_dir(
    path: str | os.PathLike,
    need_processor: bool = True,
    need_weights: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The local directory of a Mavors checkpoint (a Hub id is resolved to its snapshot, `resolve_checkpoint`),
    after checking it (without `need_weights`, a Hub id fetches only the JSON files): `FileNotFoundError` naming every
    file it lacks (pointing a LoRA run's output folder at its
    `merged/` checkpoint), `ValueError` naming a corrupt JSON or safetensors file."""
    patterns = SNAPSHOT_PATTERNS if need_weights else CONFIG_PATTERNS
    path = resolve_checkpoint(
        path, "checkpoint", revision=revision, cache_dir=cache_dir, allow_patterns=patterns
    )
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        merged = path / "merged"
        hint = (
            f"use {str(merged)!r}"
            if (merged / "config.json").is_file()
            else "merge it first (merge_and_save)"
        )
        raise FileNotFoundError(
            f"{str(path)!r} holds LoRA adapters, not a full Mavors checkpoint; {hint} (train with --merge-lora to "
            "get OUTPUT/merged)"
        )
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if need_weights and not any((path / name).is_file() for name in MODEL_FILES):
        missing.append(" or ".join(MODEL_FILES))
    if need_processor:
        if not (path / "processor_config.json").is_file():
            missing.append("processor_config.json")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            missing.append("tokenizer files (" + ", ".join(TOKENIZER_FILES) + ")")
    if missing:
        merged = path / "merged"
        hint = (
            f"; did you mean its merged checkpoint {str(merged)!r}?"
            if (merged / "config.json").is_file()
            else ""
        )
        raise FileNotFoundError(
            f"{str(path)!r} is not a complete Mavors checkpoint; missing: {'; '.join(missing)}{hint}"
        )
    validate_checkpoint_files(path, check_weights=need_weights)
    return path


# Where a saved video processor's options are, in the order `transformers`' video processor looks for them: the
# nested entry of processor_config.json (how processors save since transformers 5), then the legacy files.
VIDEO_PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


def read_video_processor_dict(directory: str | os.PathLike) -> dict[str, Any]:
    """The options a checkpoint's video processor was saved with: `processor_config.json`'s `"video_processor"`
    entry, else `video_preprocessor_config.json`, else `preprocessor_config.json`; `FileNotFoundError` when none
    has them, `ValueError` naming a file that is not a JSON object."""
    directory = Path(directory)
    processor_file = directory / "processor_config.json"
    if processor_file.is_file():
        saved = read_json_file(processor_file)
        if isinstance(saved, dict) and "video_processor" in saved:
            return _json_object(saved["video_processor"], f"{processor_file} ['video_processor']")
    for name in VIDEO_PROCESSOR_FILES:
        if (directory / name).is_file():
            return _json_object(read_json_file(directory / name), str(directory / name))
    raise FileNotFoundError(
        f"{str(directory)!r} has no saved video processor (processor_config.json with a 'video_processor' entry, "
        f"or {' / '.join(VIDEO_PROCESSOR_FILES)})"
    )


def _json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(
            f"{where} must be a JSON object of video-processor options, got {type(value).__name__}"
        )
    return value


__all__ = [
    "CONFIG_PATTERNS",
    "JSON_FILES",
    "MODEL_FILES",
    "SNAPSHOT_PATTERNS",
    "TOKENIZER_FILES",
    "check_checkpoint_dir",
    "check_mavors_config_dict",
    "looks_like_repo_id",
    "read_json_file",
    "read_safetensors_shapes",
    "read_video_processor_dict",
    "resolve_checkpoint",
    "safetensors_files",
    "validate_checkpoint_files",
]
