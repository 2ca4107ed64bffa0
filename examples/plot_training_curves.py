"""Run the tiny offline SFT and DPO demos and plot their curves (docs/training_curves.png).

    python examples/plot_training_curves.py --output docs/training_curves.png

The demos train a tiny random Mavors on synthetic videos through the real path (MavorsSFTTrainer /
MavorsDPOTrainer, our collators, PyAV decoding). A higher learning rate than the paper's 1e-5 is used so the
tiny model moves within a few dozen CPU steps.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_demo(script: str, output: Path, steps: int, learning_rate: float) -> list[dict]:
    command = [
        sys.executable,
        str(HERE / script),
        "--tiny-demo",
        "--output-dir",
        str(output),
        "--max-steps",
        str(steps),
        "--learning-rate",
        str(learning_rate),
        "--logging-steps",
        "2",
    ]
    subprocess.run(command, check=True)
    state = sorted(output.glob("checkpoint-*/trainer_state.json"))[-1]
    return [entry for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("docs/training_curves.png"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mavors-curves-"))
    sft = run_demo("train_sft.py", workdir / "sft", args.steps, args.learning_rate)
    dpo = run_demo("train_dpo.py", workdir / "dpo", args.steps, args.learning_rate / 10)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([e["step"] for e in sft], [e["loss"] for e in sft], marker=".")
    left.set(title="SFT (stage 2): assistant-token loss", xlabel="step", ylabel="loss")
    right.plot(
        [e["step"] for e in dpo], [e["rewards/margins"] for e in dpo], marker=".", label="reward margin"
    )
    right.plot([e["step"] for e in dpo], [e["loss"] for e in dpo], marker=".", label="DPO loss")
    right.set(title="DPO (stage 3) on the demo caption pairs", xlabel="step")
    right.legend()
    fig.suptitle(
        f"tiny random Mavors, synthetic videos, CPU (lr {args.learning_rate:g} / {args.learning_rate / 10:g})"
    )
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(
        f"SFT loss {sft[0]['loss']:.3f} -> {sft[-1]['loss']:.3f}; "
        f"DPO margin {dpo[0]['rewards/margins']:.3f} -> {dpo[-1]['rewards/margins']:.3f}; plot: {args.output}"
    )


if __name__ == "__main__":
    main()
