"""Checkpoint hygiene for the Hub: checking a directory before loading, and writing a model card."""

import os
from pathlib import Path

PAPER_CITATION = """@article{shi2025mavors,
  title   = {Mavors: Multi-granularity Video Representation for Multimodal Large Language Model},
  author  = {Shi, Yang and others},
  journal = {arXiv preprint arXiv:2504.10068},
  year    = {2025}
}"""

MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def check_checkpoint_dir(path: str | os.PathLike, need_processor: bool = True) -> Path:
    """Raise `FileNotFoundError` naming every file a Mavors checkpoint directory lacks.

    Hub model ids (`"org/name"`, not an existing directory) are passed through untouched: `from_pretrained`
    reports those itself.
    """
    path = Path(path)
    if not path.exists():
        if os.sep not in str(path) and str(path).count("/") == 1:
            return path  # a Hub repo id
        raise FileNotFoundError(f"checkpoint directory not found: {str(path)!r}")
    if not path.is_dir():
        raise NotADirectoryError(f"checkpoint path is not a directory: {str(path)!r}")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in MODEL_FILES):
        missing.append(" or ".join(MODEL_FILES))
    if need_processor:
        if not (path / "processor_config.json").is_file():
            missing.append("processor_config.json")
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            missing.append("tokenizer files (" + ", ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise FileNotFoundError(
            f"{str(path)!r} is not a complete Mavors checkpoint; missing: {'; '.join(missing)}"
        )
    return path


def model_card(config, processor=None, base_models: tuple[str, ...] = (), title: str = "Mavors") -> str:
    """A Hub model card (README.md) for a Mavors checkpoint, with the settings a user needs to know."""
    vision = config.vision_config
    text = config.text_config
    video_processor = getattr(processor, "video_processor", None)
    fps = getattr(video_processor, "fps", None)
    max_chunks = getattr(video_processor, "max_chunks", None)
    base_lines = "".join(f"\n  - {name}" for name in base_models)
    base_block = f"base_model:{base_lines}\n" if base_models else ""
    return f"""---
library_name: transformers
pipeline_tag: video-text-to-text
license: apache-2.0
tags:
  - mavors
  - video
  - multimodal
{base_block}---

# {title}

A [Mavors](https://arxiv.org/abs/2504.10068) video/image language model for 🤗 Transformers: videos are cut
into chunks of {vision.frames_per_chunk} frames, each chunk is embedded by a 3D-convolution SigLIP ViT, and
chunks are linked by a causal aggregator whose rotary positions are chunk timestamps (C-RoPE).

| setting | value |
|---|---|
| frames per chunk (F) | {vision.frames_per_chunk} |
| aggregator layers (L_inter) | {vision.ifa_num_hidden_layers} ({vision.ifa_position_mode} positions) |
| ViT | {vision.num_hidden_layers} layers, width {vision.hidden_size}, patch {vision.patch_size}, R_v = {vision.image_size} |
| language model | Qwen2, {text.num_hidden_layers} layers, width {text.hidden_size} |
| sampling fps (processor default) | {fps} |
| max chunks before accelerated playback | {max_chunks} |

## Usage

```python
import transformers_mavors  # or pass trust_remote_code=True where it is not installed
from transformers import pipeline

pipe = pipeline("video-text-to-text", model="<this repo or directory>")
print(pipe(videos="clip.mp4", text="Describe the video.", max_new_tokens=64)[0]["generated_text"])
```

```bash
pip install transformers-mavors
mavors generate --model <this repo or directory> --video clip.mp4 --prompt "Describe the video."
```

Without the package installed: `AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True)`
and `AutoProcessor.from_pretrained(repo, trust_remote_code=True)`.

Serves with vLLM (images and videos, offline `LLM` and the OpenAI-compatible server) once
`transformers-mavors[serving]` is installed: `python -m vllm.entrypoints.openai.api_server --model <this repo or
directory>`; see the package's `docs/serving.md`.

## Citation

```bibtex
{PAPER_CITATION}
```
"""


def write_model_card(directory: str | os.PathLike, config, processor=None, **kwargs) -> Path:
    """Write `model_card(...)` to `directory/README.md`; returns the path."""
    path = Path(directory) / "README.md"
    path.write_text(model_card(config, processor, **kwargs), encoding="utf-8")
    return path
