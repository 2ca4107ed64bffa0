"""Live video sessions against re-encoding: append cost per chunk, time to first token, cached state.

A `MavorsVideoSession` receives the peer benchmark's video (`benchmarks/peers/video.py`, 448x252, taken as sampled
at its 2 fps) one 16-frame chunk at a time, with the peer benchmark's CPU model (`benchmarks/peers/models.py`:
SigLIP-so400m widths, ViT 27/8 -> 3 layers, IFA 3/8 -> 1 layer, Qwen2.5-0.5B widths with 24/8 -> 3 layers, random
weights). Measured in one run:

- `append`: wall time of `session.append(chunk k)` for every k up to `--chunks` (IVE of that chunk, IFA from the
  cache, projector, language-model prefill of its tokens); reported per k and as medians over the first three
  chunks after the first (k = 2..4) and the last three. The headline ratio comes from interleaved rounds after
  the run: chunk k = 2, 3, 4 onto a fresh session alternating with chunks `--chunks` + 1, + 2, + 3 onto the long
  one (its budget is `--chunks` + `--repeats`, so nothing is thinned), so that load changes on a shared machine
  hit both sides alike.
- `offline`: the `video-text-to-text` pipeline on the whole prefix of k chunks with one new token (everything
  re-encoded: what answering after chunk k costs without a session), at a few k.
- `ask`: `session.ask(question, max_new_tokens=1)` after k chunks (median of `--repeats`), against `offline` at the
  same k; the first new token of both is checked to agree.
- `state`: the session's cached bytes after the last chunk (pooled IVE tokens, IFA keys/values, projected
  tokens, language-model KV cache).

The language model's vocabulary is the tiny offline tokenizer's (about 400 tokens, not Qwen's 151,936): no
Qwen tokenizer is available offline, and the LM head only runs on the last position, so this leaves the measured
costs essentially unchanged.

    python benchmarks/live_video.py                 # 60 chunks at 448x252 (a few minutes on 2 CPU cores)
    python benchmarks/live_video.py --quick         # 16 chunks at 224x140
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import pipeline

from transformers_mavors import (
    MavorsConfig,
    MavorsForConditionalGeneration,
    MavorsImageProcessor,
    MavorsProcessor,
    MavorsVideoProcessor,
    MavorsVideoSession,
)
from transformers_mavors.testing_utils import build_tiny_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.config import FPS, FRAMES_PER_CHUNK  # noqa: E402
from peers.models import QWEN2_5_0_5B_TEXT, SIGLIP_SO400M, reduced  # noqa: E402
from peers.video import benchmark_frames  # noqa: E402

QUESTION = "Describe what happens in the video."
DEPTH_DIVISOR = 8  # the peer benchmark's CPU setting


def build(width: int, height: int, max_chunks: int) -> tuple[MavorsForConditionalGeneration, MavorsProcessor]:
    """The peer benchmark's CPU Mavors (depths / 8) with the tiny tokenizer, and a processor that keeps the frame
    size (R_v = sqrt(W*H), as the peer benchmark's Mavors inputs)."""
    tokenizer = build_tiny_tokenizer()
    vision = dict(SIGLIP_SO400M, num_hidden_layers=reduced(SIGLIP_SO400M["num_hidden_layers"], DEPTH_DIVISOR))
    text = dict(
        QWEN2_5_0_5B_TEXT, num_hidden_layers=reduced(QWEN2_5_0_5B_TEXT["num_hidden_layers"], DEPTH_DIVISOR)
    )
    text["vocab_size"] = len(tokenizer) + (-len(tokenizer)) % 8
    image_size = round(math.sqrt(width * height))
    config = MavorsConfig(
        vision_config=dict(
            **vision,
            image_size=image_size,
            patch_size=14,
            frames_per_chunk=FRAMES_PER_CHUNK,
            ifa_num_hidden_layers=reduced(3, DEPTH_DIVISOR),
            ifa_num_attention_heads=vision["num_attention_heads"],
            ifa_intermediate_size=vision["intermediate_size"],
        ),
        text_config=dict(model_type="qwen2", **text),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
    )
    torch.manual_seed(0)
    model = MavorsForConditionalGeneration(config).eval()
    geometry = dict(image_size=image_size, patch_size=14)
    processor = MavorsProcessor(
        image_processor=MavorsImageProcessor(**geometry),
        video_processor=MavorsVideoProcessor(
            fps=FPS, max_chunks=max_chunks, frames_per_chunk=FRAMES_PER_CHUNK, **geometry
        ),
        tokenizer=tokenizer,
    )
    return model, processor


def timed(call, cpu: dict | None = None, key=None) -> tuple[float, object]:
    """Wall seconds of `call()` and its result; with `cpu`, also stores the process CPU seconds under `key` (on a
    shared machine the CPU time shows the work done, the wall time also the waiting for a core)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = call()
    if cpu is not None:
        cpu[key] = time.process_time() - start_cpu
    return time.perf_counter() - start, result


def run(args: argparse.Namespace) -> dict:
    width, height = (int(v) for v in args.size.lower().split("x"))
    model, processor = build(width, height, args.chunks)
    frames = benchmark_frames((args.chunks + args.repeats) * FRAMES_PER_CHUNK, height, width)
    pipe = pipeline("video-text-to-text", model=model, processor=processor)
    session = MavorsVideoSession(model, processor, fps=FPS, max_chunks=args.chunks + args.repeats)
    one_token = {"max_new_tokens": 1, "do_sample": False}

    def offline(k: int):
        return pipe(
            videos=frames[: k * FRAMES_PER_CHUNK],
            text=QUESTION,
            fps=FPS,
            max_chunks=args.chunks,
            return_full_text=False,
            **one_token,
        )[0]["generated_text"]

    offline(1)  # warm-up of the pipeline's code paths
    append_s, offline_s, ask_s, agree = {}, {}, {}, {}
    append_cpu, offline_cpu, ask_cpu = {}, {}, {}
    for k in range(1, args.chunks + 1):
        chunk = frames[(k - 1) * FRAMES_PER_CHUNK : k * FRAMES_PER_CHUNK]
        append_s[k], _ = timed(lambda chunk=chunk: session.append(chunk), append_cpu, k)
        if k in args.offline_at:
            offline_s[k], reference = timed(lambda k=k: offline(k), offline_cpu, k)
        if k in args.ask_at:
            times, cpu_times, answers = [], {}, []
            for repeat in range(args.repeats):
                elapsed, answer = timed(lambda: session.ask(QUESTION, **one_token), cpu_times, repeat)
                times.append(elapsed), answers.append(answer)
            ask_s[k], ask_cpu[k] = statistics.median(times), statistics.median(cpu_times.values())
            agree[k] = len(set(answers)) == 1 and (k not in offline_s or answers[0] == reference)
        print(
            f"chunk {k:3d}: append {append_s[k]:.3f} s"
            + (f", offline {offline_s[k]:.2f} s" if k in offline_s else "")
            + (f", ask {ask_s[k]:.3f} s" if k in ask_s else "")
            + f" (CPU: append {append_cpu[k]:.3f} s)",
            flush=True,
        )
    state = {name: value / 2**20 for name, value in session.cached_bytes.items()}
    # Interleaved rounds: one more chunk onto the long session (chunk chunks+1, +2, ...) and one onto a fresh short
    # one (chunk 2, 3, ...), alternately, so load changes on a shared machine hit both sides alike.
    short = MavorsVideoSession(model, processor, fps=FPS, max_chunks=args.chunks + args.repeats)
    short.append(frames[:FRAMES_PER_CHUNK])
    rounds = {"early_s": [], "late_s": [], "early_cpu_s": [], "late_cpu_s": []}
    for r in range(args.repeats):
        for side, target, k in (("early", short, r + 2), ("late", session, args.chunks + r + 1)):
            chunk, cpu = frames[(k - 1) * FRAMES_PER_CHUNK : k * FRAMES_PER_CHUNK], {}
            elapsed, _ = timed(lambda chunk=chunk, target=target: target.append(chunk), cpu, 0)
            rounds[f"{side}_s"].append(elapsed), rounds[f"{side}_cpu_s"].append(cpu[0])
    print(f"interleaved rounds: {rounds}", flush=True)
    first, last = range(2, min(5, args.chunks + 1)), range(max(2, args.chunks - 2), args.chunks + 1)

    def ratios(append, offline, ask, unit):
        early, late = statistics.median(append[k] for k in first), statistics.median(append[k] for k in last)
        early_rounds = statistics.median(rounds[f"early{unit}_s"])
        late_rounds = statistics.median(rounds[f"late{unit}_s"])
        return {
            "append_early_median_s": early,
            "append_late_median_s": late,
            "append_late_over_early": late / early,
            "interleaved_early_median_s": early_rounds,
            "interleaved_late_median_s": late_rounds,
            "interleaved_late_over_early": late_rounds / early_rounds,
            "ask_over_offline": {k: ask[k] / offline[k] for k in ask if k in offline},
            "append_over_offline": {k: append[k] / offline[k] for k in offline},
        }

    report = {
        "setup": {
            "size": f"{width}x{height}",
            "fps": FPS,
            "frames_per_chunk": FRAMES_PER_CHUNK,
            "chunks": args.chunks,
            "tokens_per_chunk": session._features[0].shape[0],
            "depths": {
                "vit": model.config.vision_config.num_hidden_layers,
                "ifa": model.config.vision_config.ifa_num_hidden_layers,
                "llm": model.config.text_config.num_hidden_layers,
            },
            "dtype": str(model.dtype),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "repeats": args.repeats,
        },
        "append_s": append_s,
        "offline_ttft_s": offline_s,
        "ask_ttft_s": ask_s,
        "append_cpu_s": append_cpu,
        "offline_ttft_cpu_s": offline_cpu,
        "ask_ttft_cpu_s": ask_cpu,
        "first_token_agrees": agree,
        "state_mb": {**state, "total": sum(state.values())},
        "interleaved_rounds": rounds,
        "summary": ratios(append_s, offline_s, ask_s, ""),
        "summary_cpu": ratios(append_cpu, offline_cpu, ask_cpu, "_cpu"),
    }
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    append = {int(k): v for k, v in report["append_s"].items()}
    offline = {int(k): v for k, v in report["offline_ttft_s"].items()}
    ask = {int(k): v for k, v in report["ask_ttft_s"].items()}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    append_cpu = {int(k): v for k, v in report["append_cpu_s"].items()}
    left.plot(list(append), list(append.values()), label="session.append(chunk k), wall")
    left.plot(list(append_cpu), list(append_cpu.values()), ":", label="session.append(chunk k), CPU")
    left.plot(
        list(offline), list(offline.values()), "o--", label="re-encode prefix (offline pipeline, 1 token)"
    )
    left.set_xlabel("chunk k")
    left.set_ylabel("seconds")
    left.set_yscale("log")
    left.set_title("Cost of taking in chunk k")
    left.legend()
    shared = [k for k in ask if k in offline]
    x = range(len(shared))
    right.bar([i - 0.2 for i in x], [offline[k] for k in shared], 0.4, label="offline pipeline")
    right.bar([i + 0.2 for i in x], [ask[k] for k in shared], 0.4, label="session.ask")
    right.set_xticks(list(x), [f"{k} chunks" for k in shared])
    right.set_ylabel("time to first token (s)")
    right.set_yscale("log")
    right.set_title("TTFT of a question")
    right.legend()
    setup = report["setup"]
    figure.suptitle(
        f"Live session, {setup['size']} at {setup['fps']:g} fps, depths {setup['depths']}, {setup['threads']} threads"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def print_summary(report: dict) -> None:
    for name, key, unit in (("wall", "summary", ""), ("CPU", "summary_cpu", "_cpu")):
        print(f"\n{name} time:")
        print_ratios(report, report[key], unit)
    print(
        "cached state (MB): " + ", ".join(f"{name} {value:.1f}" for name, value in report["state_mb"].items())
    )


def print_ratios(report: dict, summary: dict, unit: str) -> None:
    print(
        f"append: chunks 2-4 median {summary['append_early_median_s']:.3f} s, last three "
        f"{summary['append_late_median_s']:.3f} s, ratio {summary['append_late_over_early']:.2f}; interleaved "
        f"rounds: chunk 2-4 onto a fresh session {summary['interleaved_early_median_s']:.3f} s, the next chunks onto "
        f"the long one {summary['interleaved_late_median_s']:.3f} s, ratio "
        f"{summary['interleaved_late_over_early']:.2f} (target <= 1.5)"
    )
    for k, ratio in summary["ask_over_offline"].items():
        print(
            f"ask after {k} chunks: {report['ask_ttft' + unit + '_s'][k]:.3f} s vs offline "
            f"{report['offline_ttft' + unit + '_s'][k]:.2f} s "
            f"= {100 * ratio:.1f}% (target <= 10% at the last); first token agrees: {report['first_token_agrees'][k]}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 chunks at 224x140")
    parser.add_argument("--size", help="frame size WxH (default 448x252; --quick 224x140)")
    parser.add_argument("--chunks", type=int, help="chunks appended (default 60; --quick 16)")
    parser.add_argument("--repeats", type=int, default=3, help="asks per measurement point (median)")
    parser.add_argument("--json", type=Path, help="write the report here (e.g. docs/live_video.json)")
    parser.add_argument("--plot", type=Path, help="write the plot here (e.g. docs/live_video.png)")
    args = parser.parse_args(argv)
    args.size = args.size or ("224x140" if args.quick else "448x252")
    args.chunks = args.chunks or (16 if args.quick else 60)
    points = [4, 8, 16] if args.quick else [8, 32, 60]
    args.ask_at = [k for k in points if k <= args.chunks] or [args.chunks]
    args.offline_at = sorted({2, *args.ask_at})
    torch.set_grad_enabled(False)
    report = run(args)
    print_summary(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    main()
