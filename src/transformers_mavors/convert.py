"""`mavors convert`: a Stage-1-ready Mavors checkpoint from a SigLIP and a Qwen2 checkpoint, written safely.

Everything that can be checked is checked before any weight is loaded: the output location (absent or an empty
directory), both inputs (local directories or Hub ids, with their configs, the Qwen2 tokenizer and room for the
vision tokens). The checkpoint is written into a fresh temporary directory next to the output and renamed into
place at the end; on any failure, or Ctrl-C, only that temporary directory is removed. Nothing this command did
not create is ever deleted or overwritten.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# Files any of which makes a directory a usable tokenizer source for `AutoTokenizer`.
QWEN_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


class ConversionInterrupted(Exception):
    """Ctrl-C during a conversion; the partial output was removed."""

    exit_status = 130  # the console script exits as for Ctrl-C


def check_output_location(output: str | os.PathLike) -> Path:
    """`FileExistsError` unless `output` is absent or an empty directory, and its parent can be written."""
    output = Path(output)
    if output.is_symlink() or output.is_file():
        raise FileExistsError(f"--output {str(output)!r} is an existing file; choose a new directory")
    if output.is_dir() and any(output.iterdir()):
        raise FileExistsError(
            f"--output {str(output)!r} is a directory that is not empty; choose a new or empty directory "
            "(nothing in it was touched)"
        )
    parent = _existing_parent(output)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into {str(parent)!r} (for --output {str(output)!r})")
    return output


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{str(parent)!r} is a file, so {str(path)!r} cannot be created")
    return parent


def check_inputs(vision: str | os.PathLike, text: str | os.PathLike, **hub: Any) -> tuple[Path, Path]:
    """Resolve both inputs and check them without loading weights; returns their local directories."""
    from transformers import AutoConfig, AutoTokenizer

    from .configuration_mavors import add_vision_special_tokens
    from .loading import resolve_checkpoint, validate_checkpoint_files

    vision_dir = resolve_checkpoint(vision, "SigLIP checkpoint (--vision)", **hub)
    text_dir = resolve_checkpoint(text, "Qwen2 checkpoint (--text)", **hub)
    for directory, flag in ((vision_dir, "--vision"), (text_dir, "--text")):
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{flag} {str(directory)!r} has no config.json")
        validate_checkpoint_files(directory, require_mavors_config=False)
    vision_type = AutoConfig.from_pretrained(vision_dir).model_type
    if vision_type not in ("siglip", "siglip_vision_model"):
        raise ValueError(
            f"--vision {str(vision_dir)!r} holds a {vision_type!r} checkpoint, expected a SigLIP one"
        )
    text_type = AutoConfig.from_pretrained(text_dir).model_type
    if text_type != "qwen2":
        raise ValueError(f"--text {str(text_dir)!r} holds a {text_type!r} checkpoint, expected a Qwen2 one")
    if not any((text_dir / name).is_file() for name in QWEN_TOKENIZER_FILES):
        raise FileNotFoundError(
            f"--text {str(text_dir)!r} has no tokenizer (none of {', '.join(QWEN_TOKENIZER_FILES)}); the "
            "checkpoint needs the Qwen2 tokenizer that matches its embeddings"
        )
    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    add_vision_special_tokens(tokenizer)
    for token in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"):
        if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
            raise ValueError(
                f"--text {str(text_dir)!r}: the vision token {token} cannot be added to its tokenizer"
            )
    return vision_dir, text_dir


def write_checkpoint_atomically(output: Path, write: Any) -> Path:
    """Run `write(staging_dir)` into a fresh temporary directory next to `output`, then rename it to `output`.

    The temporary directory is created here (a unique name, so no user directory is ever reused); it is removed on
    any failure or Ctrl-C (`ConversionInterrupted`), and nothing else is."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        write(staging)
        check_output_location(output)  # still free: nothing appeared there meanwhile
        if output.is_dir():
            output.rmdir()  # empty, checked above
        staging.rename(output)
    except KeyboardInterrupt:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConversionInterrupted(
            f"interrupted; the partial checkpoint was removed and {str(output)!r} left as it was"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


__all__ = ["ConversionInterrupted", "check_inputs", "check_output_location", "write_checkpoint_atomically"]
