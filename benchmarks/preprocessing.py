"""Speed of Mavors video preprocessing against a bare PyAV decode of the same file.

Generates (once, cached) a 60 s, 1280x720, 30 fps H.264 clip with PyAV, then times, interleaved so that machine
noise hits both alike:

- **bare decode**: PyAV with threaded decoding, every frame decoded, nothing converted (the floor any PyAV
  pipeline pays);
- **processor**: `MavorsVideoProcessor` at its default settings (decode + fixed-fps sampling + resize +
  normalise + chunk packing), and optionally at other `--fps` values.

Reports medians over `--repeats` runs, the processor/bare ratio (median of per-run ratios), real-time factor
(video seconds per wall second), output frames per second and the output tensor's memory. Absolute times
depend on the machine; compare ratios.

    python benchmarks/preprocessing.py                  # defaults: 2 cores, 5 repeats
    python benchmarks/preprocessing.py --fps 2 4 8 --repeats 7 --json results.json
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from tqdm.auto import tqdm

from transformers_mavors import MavorsVideoProcessor

WIDTH, HEIGHT, SOURCE_FPS, SECONDS = 1280, 720, 30, 60


def make_clip(path: Path) -> Path:
    """A 60 s 720p30 H.264 clip: moving gradients, a sliding block and fixed noise (so it is not trivial to code)."""
    if path.exists():
        return path
    tmp = path.with_suffix(".partial.mp4")
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 24, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=SOURCE_FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        frames = tqdm(
            range(SOURCE_FPS * SECONDS), desc="Encoding the 60 s test clip", unit="frame", mininterval=2
        )
        for index in frames:
            t = index / SOURCE_FPS
            frame[..., 0] = 128 + 100 * np.sin(xx / 90 + t)
            frame[..., 1] = 128 + 100 * np.sin(yy / 70 - 1.3 * t)
            frame[..., 2] = (xx + yy + 60 * t) % 256
            left = (index * 7) % (WIDTH - 200)
            frame[200:400, left : left + 200] = (230, 40, 40)
            frame += noise
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def bare_decode(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def limit_cores(cores: int) -> int:
    """Pin this process (and the decoder threads it starts) to `cores` CPUs; returns how many it got."""
    if hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[:cores])
        cores = min(cores, len(available))
    torch.set_num_threads(cores)
    return cores


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", type=int, default=2, help="CPUs to run on (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each variant (default 5)")
    parser.add_argument("--fps", type=float, nargs="*", default=[], help="extra fps values to time")
    parser.add_argument(
        "--clip", type=Path, default=Path(tempfile.gettempdir()) / "mavors_bench_720p30_60s.mp4"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--plot", type=Path, help="also draw per-round times and ratios to this PNG")
    args = parser.parse_args()

    cores = limit_cores(args.cores)
    clip = make_clip(args.clip)
    default = MavorsVideoProcessor()
    variants = {"bare PyAV decode": None, f"processor (default, fps={default.fps:g})": default}
    for fps in args.fps:
        if fps != default.fps:
            variants[f"processor (fps={fps:g})"] = MavorsVideoProcessor(fps=fps)

    # Warm up once (file cache, lazy imports), then interleave the variants in every round.
    bare_decode(clip)
    outputs = {name: processor(str(clip)) for name, processor in variants.items() if processor is not None}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in tqdm(range(args.repeats), desc=f"Timing ({cores} cores)", unit="round"):
        for name, processor in variants.items():
            start = time.perf_counter()
            if processor is None:
                bare_decode(clip)
            else:
                processor(str(clip))
            times[name].append(time.perf_counter() - start)

    bare = times["bare PyAV decode"]
    rows = []
    for name, runs in times.items():
        median = statistics.median(runs)
        row = {
            "variant": name,
            "median_s": median,
            "ratio_to_bare": statistics.median(run / base for run, base in zip(runs, bare, strict=True)),
            "realtime_factor": SECONDS / median,
            "runs_s": runs,
        }
        if name in outputs:
            out = outputs[name]
            kept_frames = int(out["video_grid_thw"][0, 0]) * variants[name].frames_per_chunk
            row.update(
                source_frames_per_s=SOURCE_FPS * SECONDS / median,
                output_shape=list(out["pixel_values_videos"].shape),
                output_mib=out["pixel_values_videos"].numel() * 4 / 2**20,
                output_frames=kept_frames,
                output_frames_per_s=kept_frames / median,
                grid_thw=out["video_grid_thw"][0].tolist(),
            )
        else:
            row.update(
                decoded_frames=SOURCE_FPS * SECONDS, decoded_frames_per_s=SOURCE_FPS * SECONDS / median
            )
        rows.append(row)

    print(
        f"\n{SECONDS} s {WIDTH}x{HEIGHT} {SOURCE_FPS} fps H.264, {cores} cores, {args.repeats} interleaved runs"
    )
    print(
        "| variant | median (s) | vs bare decode | real time | output | output memory | frames/s in -> out |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "output_shape" in row:
            output = f"{row['grid_thw'][0]} chunks x {row['grid_thw'][1]}x{row['grid_thw'][2]} patches"
            memory = f"{row['output_mib']:.0f} MiB"
            rate = f"{row['source_frames_per_s']:.0f} -> {row['output_frames_per_s']:.0f}"
        else:
            output, memory = f"{row['decoded_frames']} frames decoded", "-"
            rate = f"{row['decoded_frames_per_s']:.0f} -> -"
        print(
            f"| {row['variant']} | {row['median_s']:.2f} | {row['ratio_to_bare']:.2f}x | "
            f"{row['realtime_factor']:.1f}x | {output} | {memory} | {rate} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "repeats": args.repeats, "rows": rows}, indent=2))
    if args.plot:
        plot(rows, cores, args.repeats, args.plot)


def plot(rows: list[dict], cores: int, repeats: int, path: Path) -> None:
    """Left: every timed run per variant (median marked). Right: median ratio to the bare decode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["variant"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for y, row in enumerate(rows):
        left.scatter(row["runs_s"], [y] * len(row["runs_s"]), color="tab:blue", alpha=0.6, s=18)
        left.scatter([row["median_s"]], [y], color="black", marker="|", s=300)
    left.axvline(SECONDS / 10, color="tab:red", linestyle="--", label="10x real time")
    left.set_yticks(range(len(names)), names)
    left.set_xlabel(f"seconds to process the {SECONDS} s clip (runs; bar = median)")
    left.legend(loc="lower right")
    ratios = [row["ratio_to_bare"] for row in rows]
    right.barh(range(len(names)), ratios, color=["tab:gray"] + ["tab:blue"] * (len(rows) - 1))
    right.axvline(1.3, color="tab:red", linestyle="--", label="1.3x target")
    right.set_yticks(range(len(names)), [""] * len(names))
    right.set_xlabel("median ratio to bare PyAV decode")
    right.legend(loc="lower right")
    fig.suptitle(f"{WIDTH}x{HEIGHT} {SOURCE_FPS} fps H.264, {cores} cores, {repeats} interleaved rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
