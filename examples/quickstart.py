"""Quickstart: the whole Mavors path, offline, on a tiny randomly initialised model.

The model has random weights, so its answer is meaningless text: this script shows the plumbing (a video
file -> chunks -> visual tokens -> `generate`) and that a saved checkpoint loads through the standard
`pipeline`, not a trained model. See README.md for building a real checkpoint from SigLIP + Qwen2.5.
"""

import tempfile
from pathlib import Path

import torch
from transformers import pipeline

import transformers_mavors  # noqa: F401  (registers Mavors with the Auto classes and the pipeline task)
from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.testing_utils import (
    build_tiny_tokenizer,
    tiny_mavors_config,
    tiny_processor,
    write_sample_video,
)


def main() -> None:
    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix="mavors-quickstart-"))
    video = write_sample_video(workdir / "sample.mp4", num_frames=40, height=96, width=128, fps=8)

    tokenizer = build_tiny_tokenizer()
    model = MavorsForConditionalGeneration(tiny_mavors_config(tokenizer))
    processor = tiny_processor(tokenizer)
    checkpoint = workdir / "tiny-random-mavors"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)

    seen = processor.video_processor(str(video), return_metadata=True)
    meta = seen["video_metadata"][0]
    print(
        f"video: {meta.duration:.1f} s -> {meta.num_frames} frames at {meta.fps:g} fps, "
        f"{int(seen['video_grid_thw'][0, 0])} chunks, positions {meta.chunk_positions}"
    )

    pipe = pipeline("video-text-to-text", model=str(checkpoint))
    result = pipe(videos=str(video), text="Describe the video.", max_new_tokens=12, return_full_text=False)
    print("tiny RANDOM model says (meaningless by design):", repr(result[0]["generated_text"]))


if __name__ == "__main__":
    main()
