"""Inference recipes: a video, an image, a multi-turn chat and a batch.

    python examples/inference.py --model path/to/mavors-checkpoint --video clip.mp4 --image photo.jpg

Without `--model` a tiny random model is built on the fly (answers are meaningless; the calls are the same),
and without `--video` / `--image` sample media are generated.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import transformers_mavors  # noqa: F401  (registers Mavors)
from transformers_mavors.testing_utils import (
    build_tiny_tokenizer,
    tiny_mavors_config,
    tiny_processor,
    write_sample_video,
)


def tiny_checkpoint(directory: Path) -> Path:
    tokenizer = build_tiny_tokenizer()
    transformers_mavors.MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)).save_pretrained(
        directory
    )
    tiny_processor(tokenizer).save_pretrained(directory)
    return directory


def answer(model, processor, conversations, **processor_kwargs) -> list[str]:
    """Generate a reply for each conversation (a batch when there are several)."""
    inputs = processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": "left", **processor_kwargs},
    ).to(model.device)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    return processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--video")
    parser.add_argument("--image")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mavors-inference-"))
    model_dir = args.model or tiny_checkpoint(workdir / "tiny")
    video = args.video or str(write_sample_video(workdir / "clip.mp4", num_frames=48, fps=8))
    image = args.image or Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8))

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="auto").eval()
    processor = AutoProcessor.from_pretrained(model_dir)

    # 1. a video, with the sampling rate and chunk budget chosen per call
    video_chat = [
        {
            "role": "user",
            "content": [{"type": "video", "path": video}, {"type": "text", "text": "Describe the video."}],
        }
    ]
    print("video:", answer(model, processor, [video_chat], fps=4, max_chunks=16)[0])

    # 2. an image (tiled into sub-images plus a thumbnail when it is large)
    image_chat = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is in the picture?"},
            ],
        }
    ]
    print("image:", answer(model, processor, [image_chat])[0])

    # 3. a multi-turn chat about the same video
    follow_up = video_chat + [
        {"role": "assistant", "content": [{"type": "text", "text": "A red square moves across the frame."}]},
        {"role": "user", "content": [{"type": "text", "text": "Which way does it move?"}]},
    ]
    print("multi-turn:", answer(model, processor, [follow_up])[0])

    # 4. a batch mixing a video and an image prompt (left padding, one generate call)
    for i, reply in enumerate(answer(model, processor, [video_chat, image_chat])):
        print(f"batch[{i}]:", reply)


if __name__ == "__main__":
    main()
