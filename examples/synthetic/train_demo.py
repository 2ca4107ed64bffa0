"""Train the offline demo model from scratch on the synthetic tasks, score it, and (with --ship) package it.

    python examples/synthetic/train_demo.py --output-dir runs/demo            # train + score + plots in docs/
    python examples/synthetic/train_demo.py --output-dir runs/demo --ship     # ... and replace the shipped model

Everything goes through the real training path (`train_synthetic`: JSONL records -> MavorsSFTCollator decoding
MP4 files -> MavorsTrainer). Writes `docs/learning.json` (held-out accuracy per task, chance, sample counts, the
loss log) and `docs/learning_curve.png`, then runs the chunk-level needle-in-a-haystack on the trained model
(`docs/niah.json`, `docs/niah.png`: trained on videos of at most 8 chunks, tested up to 32). With `--ship`
the checkpoint is copied into the package (`transformers_mavors/synthetic/demo_model`) and the sample video
(`examples/assets/demo.mp4`, a held-out caption scene) is written, so `mavors generate` without `--model`
uses them.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from transformers_mavors.evaluation.niah import plot_heatmap, run_needle_in_haystack, save_result  # noqa: E402
from transformers_mavors.synthetic import CHANCE, TASKS, make_scene, write_video  # noqa: E402
from transformers_mavors.synthetic.data import HELDOUT_SEED_OFFSET  # noqa: E402
from transformers_mavors.synthetic.demo import DEMO_MODEL_DIR, DEMO_SAMPLE_SEED, strip_code  # noqa: E402
from transformers_mavors.synthetic.training import greedy_answers, loss_curve, train_synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def plot_learning(log_history: list[dict], path: Path, chance: dict) -> None:
    steps, losses = loss_curve(log_history)
    points = [h for h in log_history if any(k.startswith("accuracy/") for k in h)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, losses)
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("training loss (answer tokens)")
    left.set_title("loss")
    for task in TASKS:
        key = f"accuracy/{task}"
        xs = [p["step"] for p in points if key in p]
        line = right.plot(xs, [p[key] for p in points if key in p], marker="o", ms=3, label=task)[0]
        right.axhline(chance[task], color=line.get_color(), ls=":", lw=1)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("step")
    right.set_ylabel("held-out exact match")
    right.set_title("held-out accuracy (dotted: chance)")
    right.legend(loc="center right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="the LLM's and projector's rate")
    parser.add_argument("--vision-lr-scale", type=float, default=3.0, help="IVE and IFA at this x the rate")
    parser.add_argument("--train-per-task", type=int, default=1500)
    parser.add_argument("--heldout-per-task", type=int, default=200)
    parser.add_argument("--curve-per-task", type=int, default=32, help="held-out records per curve point")
    parser.add_argument("--curve-every", type=int, default=250)
    parser.add_argument(
        "--repeat",
        nargs="*",
        default=["motion=3", "caption=2"],
        metavar="TASK=K",
        help="list these tasks' training records K times (the within-chunk tasks need the most steps)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the results and plots go")
    parser.add_argument(
        "--ship", action="store_true", help="copy the model into the package + write the sample"
    )
    args = parser.parse_args()

    output = Path(args.output_dir)
    run = train_synthetic(
        output,
        train_per_task=args.train_per_task,
        heldout_per_task=args.heldout_per_task,
        max_steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        vision_lr_scale=args.vision_lr_scale,
        seed=args.seed,
        accuracy_every=args.curve_every,
        curve_per_task=args.curve_per_task,
        repeat={task: int(k) for task, k in (item.split("=") for item in args.repeat)},
    )
    checkpoint = output / "checkpoint"
    run.model.save_pretrained(checkpoint)
    run.processor.save_pretrained(checkpoint)

    docs = Path(args.docs)
    results = {
        "command": "python examples/synthetic/train_demo.py " + " ".join(sys.argv[1:]),
        "train_seconds": run.train_seconds,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_per_task": args.train_per_task,
        "repeat": args.repeat,
        "seed": args.seed,
        "accuracy": run.accuracy,
        "heldout_samples": run.num_heldout,
        "chance": {task: CHANCE[task] for task in run.accuracy},
        "log_history": run.log_history,
    }
    (docs / "learning.json").write_text(json.dumps(results, indent=1) + "\n")
    plot_learning(run.log_history, docs / "learning_curve.png", CHANCE)
    print(f"trained {args.steps} steps in {run.train_seconds / 60:.1f} min")
    for task in run.accuracy:
        print(
            f"  {task:8s} {run.accuracy[task]:.3f} on {run.num_heldout[task]} held-out (chance {CHANCE[task]:.3f})"
        )

    needle = run_needle_in_haystack(run.model, run.processor, chunk_counts=(2, 4, 8, 16, 32), seed=args.seed)
    save_result(needle, docs / "niah.json")
    plot_heatmap(needle, docs / "niah.png", title="tiny demo model (trained on <= 8 chunks)")
    for n in needle.chunk_counts:
        print(f"  needle, {n:2d} chunks: mean accuracy {sum(needle.accuracy[n]) / n:.3f}")

    if args.ship:
        shutil.rmtree(DEMO_MODEL_DIR, ignore_errors=True)
        shutil.copytree(checkpoint, DEMO_MODEL_DIR)
        strip_code(DEMO_MODEL_DIR)
        scene = make_scene("caption", HELDOUT_SEED_OFFSET + DEMO_SAMPLE_SEED)
        sample = write_video(scene.frames, ROOT / "examples" / "assets" / "demo.mp4")
        answer = greedy_answers(run.model, run.processor, ["Describe the video."], [str(sample)])[0]
        print(f"shipped {DEMO_MODEL_DIR}; {sample.name}: {answer!r} (reference {scene.answer!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
