"""The command line: arguments, the defaults per device and mode, and the sections run in order."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from transformers.utils import logging

from . import __doc__ as BENCHMARK_DOC
from .comparison import run_peers
from .config import Setup
from .measure import device_name, pick_threads
from .memory import run_memory
from .models import LLMS, build_bare_llm, build_models
from .report import plot, plot_memory, print_report
from .utilisation import run_utilisation

logger = logging.get_logger("transformers_mavors.benchmarks.peers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=BENCHMARK_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="16 and 64 frames at 224x140, 3 rounds: < 2 min on 2 cores"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths, for tests (seconds)")
    parser.add_argument("--frames", type=int, nargs="+", help="frame counts (default 16 64 256)")
    parser.add_argument("--size", help="frame size WxH (default 448x252; --quick 224x140)")
    parser.add_argument("--repeats", type=int, help="timed rounds after the warm-up (default 3, at least 3)")
    parser.add_argument(
        "--decode-tokens", type=int, help="tokens decoded after the first (default 32; quick 5)"
    )
    parser.add_argument(
        "--llm", choices=sorted(LLMS), help="shared LLM widths (default: 7b on GPU, 0.5b on CPU)"
    )
    parser.add_argument(
        "--depth-divisor", type=int, help="divide every stack's depth by this (default: 1 GPU, 8 CPU)"
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], help="default: bfloat16 on GPU, float32 on CPU"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["peers", "utilisation", "memory"],
        default=["peers", "utilisation", "memory"],
    )
    parser.add_argument("--memory-chunks", type=int, nargs="+", help="chunk counts (default 8 32 60)")
    parser.add_argument(
        "--memory-micro-batch", type=int, default=8, help="vision_chunk_batch_size of the memory rows"
    )
    parser.add_argument(
        "--utilisation-chunks", type=int, help="chunks in the utilisation video (default 16; quick 4)"
    )
    parser.add_argument(
        "--video-llama-3-all-logits", action="store_true", help="keep VideoLLaMA3's all-position logits"
    )
    parser.add_argument(
        "--fused-cpu-kernels",
        choices=["on", "off"],
        default="on",
        help="Mavors' vision tower through oneDNN with fused epilogues in CPU inference (default on; "
        "off = transformers' modules, the code before the switch existed)",
    )
    parser.add_argument(
        "--threads",
        default="auto",
        help="CPU threads for every model: a number, or auto (the faster of 1 and all)",
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--from-json", type=Path, help="print and plot a saved report instead of measuring")
    parser.add_argument("--plot", type=Path, help="draw tokens, TTFT and memory against frames to this PNG")
    parser.add_argument("--memory-plot", type=Path, help="draw encoding memory against chunks to this PNG")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        print_report(report)
        if args.plot:
            plot(report, args.plot)
        if args.memory_plot and report.get("memory"):
            plot_memory(report, args.memory_plot)
        return report
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu, tiny = device.type == "cuda", args.tiny
    threads_before = torch.get_num_threads()
    try:
        thread_timings = None
        if args.threads != "auto":
            torch.set_num_threads(int(args.threads))
        elif not (gpu or tiny):
            _, thread_timings = pick_threads(sorted({1, threads_before}))
        return _run(args, device, thread_timings)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, device: torch.device, thread_timings: dict | None) -> dict:
    gpu, quick, tiny = device.type == "cuda", args.quick, args.tiny
    default_size = "56x28" if tiny else "224x140" if quick else "448x252"
    width, height = (int(v) for v in (args.size or default_size).lower().split("x"))
    if width % 28 or height % 28:
        raise ValueError(f"frame sides must be multiples of 28 (patch 14 x merge 2), got {width}x{height}")
    repeats = args.repeats or 3
    if repeats < 3:
        raise ValueError(f"--repeats must be >= 3 (medians of at least 3 runs), got {repeats}")
    setup = Setup(
        device=str(device),
        dtype=args.dtype or ("bfloat16" if gpu else "float32"),
        llm=args.llm or ("tiny" if tiny else "7b" if gpu else "0.5b"),
        depth_divisor=args.depth_divisor or (1 if gpu or tiny else 8),
        width=width,
        height=height,
        frames=args.frames or ([8, 16] if tiny else [16, 64] if quick else [16, 64, 256]),
        repeats=repeats,
        decode_tokens=args.decode_tokens or (2 if tiny else 5 if quick else 32),
        tiny=tiny,
        video_llama_3_all_logits=args.video_llama_3_all_logits,
    )
    torch.manual_seed(0)
    logger.info("Building the three models")
    models = build_models(setup)
    models["mavors"].config.vision_config.fused_cpu_kernels = args.fused_cpu_kernels == "on"
    report: dict = {"device": device_name(device), "setup": asdict(setup)}
    report["setup"]["torch"], report["setup"]["threads"] = torch.__version__, torch.get_num_threads()
    report["setup"]["thread_probe_s"] = thread_timings
    report["setup"]["fused_cpu_kernels"] = args.fused_cpu_kernels == "on"

    if "peers" in args.sections:
        report.update(run_peers(setup, models, build_bare_llm(models["mavors"]), device))
    else:
        report["results"] = []
    if "utilisation" in args.sections:
        chunks = args.utilisation_chunks or (1 if tiny else 4 if quick else 16)
        report["utilisation"] = run_utilisation(
            setup, models["mavors"], device, chunks, rounds=max(repeats, 5 if quick else 7)
        )
    if "memory" in args.sections:
        counts = args.memory_chunks or ([1, 2, 4] if tiny else [8, 32, 60])
        micro_batch = 1 if tiny else args.memory_micro_batch
        report["memory"] = run_memory(
            setup, models["mavors"], device, counts, micro_batch, contrast=not quick
        )

    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot and report["results"]:
        plot(report, args.plot)
    if args.memory_plot and report.get("memory"):
        plot_memory(report, args.memory_plot)
    return report
