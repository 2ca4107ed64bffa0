"""The offline demo model: a tiny Mavors trained from scratch on the synthetic tasks, shipped inside the package.

It knows only the synthetic domain (coloured squares and circles on a grey background, 56 x 56 frames), and answers
the five task questions of `scenes.PROMPTS`. `mavors generate` uses it when no `--model` is given, so the README's
first command runs offline. It is rebuilt by `examples/synthetic/train_demo.py --ship`.
"""

from __future__ import annotations

import json
from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"
DEMO_SAMPLE_SEED = 7  # examples/assets/demo.mp4 is the held-out caption scene HELDOUT_SEED_OFFSET + this


def demo_model_path() -> Path:
    """The shipped demo checkpoint's directory (`FileNotFoundError` when the installed package lacks it)."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"the demo model is missing from {DEMO_MODEL_DIR}; reinstall transformers-mavors, or rebuild it with "
            "`python examples/synthetic/train_demo.py --ship`"
        )
    return DEMO_MODEL_DIR


def strip_code(directory: str | Path) -> None:
    """Make a saved checkpoint code-free: delete its `*.py` copies and the `auto_map` entries that point at them.

    The shipped demo loads through the installed package's own registration, so it needs neither.
    """
    directory = Path(directory)
    for path in directory.glob("*.py"):
        path.unlink()
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text())
        if _drop_auto_maps(data):
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _drop_auto_maps(data) -> bool:
    """Remove every `auto_map` key of a JSON object, nested ones included; whether anything was removed."""
    if not isinstance(data, dict):
        return False
    found = data.pop("auto_map", None) is not None
    for value in data.values():
        found = _drop_auto_maps(value) or found
    return found


__all__ = ["DEMO_MODEL_DIR", "DEMO_SAMPLE_SEED", "demo_model_path", "strip_code"]
