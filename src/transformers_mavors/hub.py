"""Checkpoint hygiene for the Hub: checking a directory before loading, and writing a model card.

`check_checkpoint_dir` lives in `transformers_mavors_planning.checkpoint` (no torch, so `mavors inspect --model`
can use it) and is re-exported here."""

import os
from pathlib import Path

from transformers_mavors_planning.checkpoint import (  # noqa: F401  (re-exported)
    MODEL_FILES,
    TOKENIZER_FILES,
    check_checkpoint_dir,
)

PAPER_CITATION = """@article{shi2025mavors,
  title   = {Mavors: Multi-granularity Video Representation for Multimodal Large Language Model},
  author  = {Shi, Yang and others},
  journal = {arXiv preprint arXiv:2504.10068},
  year    = {2025}
}"""


def hub_base_models(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names a model card may list as `base_model`: Hub ids, not local paths (which mean nothing on the Hub).

    A local snapshot of the Hub cache (`.../models--org--name/snapshots/<rev>`) is given back as `org/name`."""
    from .loading import looks_like_repo_id

    kept = []
    for name in names:
        text = os.fspath(name)
        parts = Path(text).parts
        repo = next((part for part in parts if part.startswith("models--")), None)
        if repo is not None and "snapshots" in parts:
            kept.append(repo[len("models--") :].replace("--", "/"))
        elif not os.path.exists(text) and looks_like_repo_id(text) and "/" in text:
            kept.append(text)
    return tuple(kept)


def model_card(config, processor=None, base_models: tuple[str, ...] = (), title: str = "Mavors") -> str:
    """A Hub model card (README.md) for a Mavors checkpoint, with the settings a user needs to know."""
    vision = config.vision_config
    text = config.text_config
    video_processor = getattr(processor, "video_processor", None)
    fps = getattr(video_processor, "fps", None)
    max_chunks = getattr(video_processor, "max_chunks", None)
    base_models = hub_base_models(tuple(base_models))
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
