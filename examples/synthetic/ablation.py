"""Mini ablation on the across-chunk task (paper Tables 3-4 in spirit): C-RoPE vs token RoPE vs no IFA.

    python examples/synthetic/ablation.py --output-dir runs/ablation      # docs/ablation.{json,png}

Each variant trains the tiny synthetic model from scratch on the `order` task only ("which colour appears
first?", the answer lies across chunks), with the same data, steps and learning rates, once per seed, and is
scored by exact match on the same held-out videos. Reported as mean and spread (min..max) over the seeds.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from transformers_mavors.synthetic import CHANCE  # noqa: E402
from transformers_mavors.synthetic.training import train_synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "C-RoPE (chunk positions)": {"ifa_position_mode": "chunk"},
    "token RoPE": {"ifa_position_mode": "token"},
    "no IFA (0 layers)": {"ifa_num_hidden_layers": 0},
}
TASK = "order"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="runs/ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-per-task", type=int, default=1500)
    parser.add_argument("--heldout-per-task", type=int, default=200)
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()

    output = Path(args.output_dir)
    runs = []
    for name, overrides in VARIANTS.items():
        for seed in args.seeds:
            run = train_synthetic(
                output / f"{list(VARIANTS).index(name)}-{seed}",
                data_dir=output / "data",
                tasks=(TASK,),
                train_per_task=args.train_per_task,
                heldout_per_task=args.heldout_per_task,
                max_steps=args.steps,
                batch_size=args.batch_size,
                seed=seed,
                vision_overrides=overrides,
                progress=False,
            )
            final_loss = [h["loss"] for h in run.log_history if "loss" in h][-1]
            runs.append(
                {"variant": name, "seed": seed, "accuracy": run.accuracy[TASK], "final_loss": final_loss}
            )
            print(
                f"{name:26s} seed {seed}: accuracy {run.accuracy[TASK]:.3f}  ({run.train_seconds:.0f} s)",
                flush=True,
            )

    scores_of = {name: [r["accuracy"] for r in runs if r["variant"] == name] for name in VARIANTS}
    summary = {}
    for name, scores in scores_of.items():
        summary[name] = {
            "mean": statistics.mean(scores),
            "stdev": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "min": min(scores),
            "max": max(scores),
        }
    docs = Path(args.docs)
    result = {
        "command": "python examples/synthetic/ablation.py " + " ".join(sys.argv[1:]),
        "task": TASK,
        "chance": CHANCE[TASK],
        "steps": args.steps,
        "batch_size": args.batch_size,
        "heldout_samples": args.heldout_per_task,
        "seeds": args.seeds,
        "summary": summary,
        "runs": runs,
    }
    (docs / "ablation.json").write_text(json.dumps(result, indent=1) + "\n")

    figure, axis = plt.subplots(figsize=(7, 3.6))
    for x, name in enumerate(VARIANTS):
        scores = scores_of[name]
        axis.bar(x, summary[name]["mean"], color="C0", alpha=0.5)
        axis.errorbar(x, summary[name]["mean"], yerr=summary[name]["stdev"], color="k", capsize=6)
        axis.plot([x] * len(scores), scores, "o", color="C1", ms=5)
    axis.axhline(CHANCE[TASK], color="grey", ls=":", label="chance")
    axis.set_xticks(range(len(VARIANTS)), list(VARIANTS))
    axis.set_ylim(0, 1.02)
    axis.set_ylabel(f"held-out exact match ({args.heldout_per_task} videos)")
    axis.set_title(
        f"'{TASK}' task, {args.steps} steps, seeds {args.seeds} (bar: mean, line: 1 s.d., dots: seeds)"
    )
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(docs / "ablation.png", dpi=120)
    for name, row in summary.items():
        print(
            f"{name:26s} {row['mean']:.3f} +- {row['stdev']:.3f} (min {row['min']:.3f}, max {row['max']:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
