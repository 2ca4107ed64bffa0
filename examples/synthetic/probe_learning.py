"""Does a from-scratch tiny Mavors learn to read the video? A quick probe on fresh synthetic samples.

    python examples/synthetic/probe_learning.py --task flood --steps 200     # sanity: the whole video is one colour
    python examples/synthetic/probe_learning.py --task needle --steps 400    # one flooded frame in one chunk

Every step draws a new batch (no sample repeats), so a falling loss is learning, not memorising. The loss is the
mean over the answer token and `<|im_end|>`; a model that ignores the video plateaus at the answer prior
(ln 4 / 2 = 0.69 for four equally likely colours).
"""

import argparse

import numpy as np
import torch

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.synthetic.data import synthetic_config, synthetic_processor, synthetic_tokenizer
from transformers_mavors.synthetic.scenes import COLOURS, PROMPTS, make_scene
from transformers_mavors.training import mavors_parameter_groups
from transformers_mavors.training.data import SpecialTokenIds, build_sft_labels


def sample(task: str, rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    if task == "flood":
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        return np.broadcast_to(np.uint8(COLOURS[colour]), (8, 56, 56, 3)).copy(), colour, PROMPTS["needle"]
    scene = make_scene(task, int(rng.integers(10**9)))
    return scene.frames, scene.answer, scene.prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="needle", choices=["flood", *PROMPTS])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--vision-lr-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = synthetic_tokenizer()
    processor = synthetic_processor(tokenizer)
    ids = SpecialTokenIds.from_processor(processor)
    model = MavorsForConditionalGeneration(synthetic_config(tokenizer))
    groups = mavors_parameter_groups(model, args.learning_rate, 0.0, args.vision_lr_scale)
    optimizer = torch.optim.AdamW(groups, args.learning_rate)
    for step in range(args.steps + 1):
        texts, videos = [], []
        for _ in range(args.batch_size):
            frames, answer, prompt = sample(args.task, rng)
            chat = [
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]
            texts.append(processor.apply_chat_template(chat))
            videos.append(frames)
        batch = dict(processor(text=texts, videos=videos, padding=True, return_tensors="pt"))
        batch["labels"] = build_sft_labels(batch, ids)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 20 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
