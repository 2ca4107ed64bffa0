"""Time and peak memory of `mavors inspect` on a generated 5-minute clip, against decoding the clip to get the plan.

`mavors inspect` prints the plan the video processor makes (chunks, positions, tokens) from the container
header, with `transformers_mavors_planning` alone: no frame decoded, neither torch nor transformers imported.
Before, it ran the processor on the whole video and read the plan off the output. This script measures, each in a
fresh process as a user runs it, and checks that inspect and the processor report the same plan:

- `inspect`: `mavors inspect CLIP --json` (what the command does now);
- `inspect_model`: `mavors inspect CLIP --model DIR --json`, the options a checkpoint saved (default: the bundled
  demo model, found without importing the package);
- `decode`: `MavorsVideoProcessor()(CLIP, return_metadata=True)` (what it did before);
- `import`: `import transformers_mavors` alone, what any command that loads the package pays first;
- `plan_s`: `plan_video` timed inside one process, after the imports: the planning work itself.

Wall time depends on how busy the machine is; CPU time (user + system) of the process much less so. The load
average before and after is printed with the results.

The clip (default 5 minutes, 320x240 at 25 fps, a square drifting over noise) is written once with the package's
writer (`media_io.write_video`) and reused. Run:

    python benchmarks/inspect_plan.py [--seconds 300] [--repeats 3] [--clip PATH]
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CLIP = Path(os.environ.get("TMPDIR", "/tmp")) / "mavors_benchmarks" / "inspect_5min_320x240_25fps.mp4"

PLAN_IN_PROCESS = """
import json, sys, time
from transformers_mavors import MavorsVideoProcessor
processor = MavorsVideoProcessor()
times = []
for _ in range(5):
    start = time.perf_counter()
    processor.plan_video(sys.argv[1])
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[2]))
"""

DECODE = """
import json, sys
import transformers_mavors
from transformers_mavors import MavorsVideoProcessor
out = MavorsVideoProcessor()(sys.argv[1], return_metadata=True)
meta = out["video_metadata"][0]
print(json.dumps({"chunks": out["video_grid_thw"][0, 0].item(), "positions": meta.chunk_positions}))
"""


def frames(seconds: float, fps: int, height: int = 240, width: int = 320, seed: int = 0):
    """Frames of a square drifting over a fixed noisy background, made one at a time."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    side, total = 48, int(seconds * fps)
    for index in range(total):
        frame = background.copy()
        x = int((width - side) * (0.5 + 0.5 * np.sin(index / 40)))
        y = int((height - side) * (0.5 + 0.5 * np.cos(index / 55)))
        frame[y : y + side, x : x + side] = (220, 60, 40)
        yield frame


def demo_model_dir() -> Path:
    """The bundled demo checkpoint, located without importing the package (which would import torch)."""
    spec = importlib.util.find_spec("transformers_mavors")
    return Path(spec.origin).parent / "synthetic" / "demo_model"


def write_clip(path: str, seconds: str, fps: str) -> None:
    from transformers_mavors.media_io import write_video

    path, seconds, fps = Path(path), float(seconds), int(fps)

    print(f"writing {path} ({seconds:g} s at {fps} fps) ...", file=sys.stderr)
    partial = path.with_suffix(".partial.mp4")
    write_video(frames(seconds, fps), partial, fps, options={"preset": "veryfast"})
    partial.rename(path)


def make_clip(path: Path, seconds: float, fps: int) -> Path:
    """The clip, written by a child process when missing: this process must not import the package (torch), or
    every measured child would start from its memory (Linux counts a child's peak RSS from the fork)."""
    if not path.exists():
        code = "import sys; sys.path.insert(0, sys.argv[1]); from inspect_plan import write_clip; write_clip(*sys.argv[2:])"
        arguments = [str(Path(__file__).parent), str(path), str(seconds), str(fps)]
        subprocess.run([sys.executable, "-c", code, *arguments], check=True)
    return path


def run(command: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds, peak RSS in MB and stdout of `command`, run in a fresh process (its own usage,
    from `wait4`; Linux reports the RSS in KiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="clip length")
    parser.add_argument("--fps", type=int, default=25, help="clip frame rate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip", type=Path, help=f"clip to use or write (default {DEFAULT_CLIP})")
    parser.add_argument("--skip-decode", action="store_true", help="measure `mavors inspect` only")
    parser.add_argument("--model", type=Path, help="checkpoint for `inspect_model` (default: the demo model)")
    args = parser.parse_args()
    clip = make_clip(args.clip or DEFAULT_CLIP, args.seconds, args.fps)
    model = args.model or demo_model_dir()
    load_before = os.getloadavg()

    inspect_command = [
        sys.executable,
        "-c",
        "import sys; from transformers_mavors_cli import main; sys.exit(main(sys.argv[1:]))",
        "inspect",
        str(clip),
        "--json",
    ]
    commands = {"inspect": inspect_command, "inspect_model": [*inspect_command, "--model", str(model)]}
    if not args.skip_decode:
        commands["decode"] = [sys.executable, "-c", DECODE, str(clip)]
    commands["import"] = [sys.executable, "-c", "import transformers_mavors"]

    results, plans = {}, {}
    for name, command in commands.items():
        runs = [run(command) for _ in range(args.repeats)]
        results[name] = {
            "wall_s": [round(wall, 2) for wall, _, _, _ in runs],
            "cpu_s": [round(cpu, 2) for _, cpu, _, _ in runs],
            "peak_rss_mb": [round(rss) for _, _, rss, _ in runs],
        }
        if name in ("import", "inspect_model"):
            continue
        output = json.loads(runs[-1][3])
        plans[name] = (
            output["chunks"],
            [row["position"] for row in output["chunk_table"]]
            if "chunk_table" in output
            else output["positions"],
        )
    if "decode" in plans and plans["decode"] != plans["inspect"]:
        raise AssertionError(
            f"inspect's plan {plans['inspect']} differs from the processor's {plans['decode']}"
        )
    plan_s = json.loads(run([sys.executable, "-c", PLAN_IN_PROCESS, str(clip)])[3])
    print(
        json.dumps(
            {
                "clip": str(clip),
                "chunks": plans["inspect"][0],
                "plan_s": round(plan_s, 4),
                "load_average": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
