"""Does a from-scratch tiny Mavors learn to read the video? A quick probe on fresh synthetic samples.

    python examples/synthetic/probe_learning.py --task flood --steps 200     # sanity: the whole video is one colour
    python examples/synthetic/probe_learning.py --task needle --steps 400    # one flooded frame in one chunk
    python examples/synthetic/probe_learning.py --task motion --steps 500 --learning-rate 3e-4 \
        --lr-scales ive=3,ifa=3                                              # the demo recipe's rates
    python examples/synthetic/probe_learning.py --task needle --lr-scales ive=0   # IVE frozen
    python examples/synthetic/probe_learning.py --task all --steps 1500     # all five tasks, then scored

Uses in-memory frames (no MP4 round trip) and a plain AdamW loop without weight decay or schedule, to try
optimiser settings fast; the demo model itself is trained by `train_demo.py` through the real Trainer path.

Every step draws a new batch (no sample repeats), so a falling loss is learning, not memorising. The loss is the
mean over the answer token and `<|im_end|>`; a model that ignores the video plateaus at the answer prior
(ln 4 / 2 = 0.69 for four equally likely colours). After training, the model answers `--eval-samples` fresh
videos per task (greedy) and the exact-match count is printed.
"""

import argparse
import re

import numpy as np
import torch

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.synthetic.data import synthetic_config, synthetic_processor, synthetic_tokenizer
from transformers_mavors.synthetic.scenes import COLOURS, PROMPTS, TASKS, make_scene
from transformers_mavors.synthetic.training import greedy_answers, normalize_answer
from transformers_mavors.training.data import SpecialTokenIds, build_sft_labels
from transformers_mavors.training.stages import parameter_component


def sample(task: str, rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    if task == "flood":
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        return np.broadcast_to(np.uint8(COLOURS[colour]), (8, 56, 56, 3)).copy(), colour, PROMPTS["needle"]
    if task == "all":
        task = TASKS[rng.integers(len(TASKS))]
    scene = make_scene(task, int(rng.integers(10**9)))
    return scene.frames, scene.answer, scene.prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="needle", choices=["flood", "all", *PROMPTS])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--lr-scales",
        default="",
        help="per-component LR factors, e.g. ive=0.1,ifa=0.1,projector=0.1 (0 freezes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--freeze", default="", help="regular expression of parameter names to keep frozen")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tokenizer = synthetic_tokenizer()
    processor = synthetic_processor(tokenizer)
    ids = SpecialTokenIds.from_processor(processor)
    model = MavorsForConditionalGeneration(synthetic_config(tokenizer))
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    scales = {"ive": 1.0, "ifa": 1.0, "projector": 1.0, "llm": 1.0}
    scales.update({k: float(v) for k, v in (item.split("=") for item in args.lr_scales.split(",") if item)})
    groups = {}
    for name, parameter in model.named_parameters():
        scale = 0.0 if args.freeze and re.search(args.freeze, name) else scales[parameter_component(name)]
        parameter.requires_grad_(scale > 0)
        if scale > 0:
            groups.setdefault(scale, []).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": ps, "lr": args.learning_rate * s} for s, ps in groups.items()],
        args.learning_rate,
        weight_decay=0.0,
    )
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
    model.eval()
    tasks = TASKS if args.task == "all" else [args.task] if args.task != "flood" else []
    for task in tasks:
        scenes = [make_scene(task, 10**9 + i) for i in range(args.eval_samples)]
        answers = greedy_answers(model, processor, [s.prompt for s in scenes], [s.frames for s in scenes])
        hits = sum(
            normalize_answer(a) == normalize_answer(s.answer) for a, s in zip(answers, scenes, strict=True)
        )
        print(
            f"{task}: {hits}/{len(scenes)} correct; e.g. {answers[0]!r} for {scenes[0].answer!r}", flush=True
        )


if __name__ == "__main__":
    main()
