"""Serving throughput: vLLM against `model.generate`, N concurrent video requests (docs/serving.md, "Benchmark").

For N = 1, 4 and 16 requests that all arrive at once (each a different video, the same question), three ways of
answering them on the same tiny checkpoint and the same CPU threads:

- `generate, one at a time`: `processor(...)` then `model.generate(...)` per request, in arrival order;
- `generate, batched`: one left-padded batch of all N requests (`processor(text=[...], videos=[...])`);
- `vLLM`: `vllm.LLM.generate` on all N requests (continuous batching, paged attention).

Reported per way and N: requests per minute, output tokens per second, time to first token (p50 / p95, from the
moment all requests arrive) and the share of the wall time spent decoding and preprocessing video
(`MavorsProcessor`). Every answer has exactly `--new-tokens` tokens (EOS ignored), so the ways do the same work.
Each measurement is the median of `--repeats` runs (5); all ways run in one process and
take turns within each repeat, so changes in the machine's load hit them alike.

Run in the serving environment (`.ci/engines/serving.sh` builds it):

    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 .venvs/serving/bin/python benchmarks/serving.py

Writes `docs/serving_benchmark.json`, and `docs/serving_benchmark.png` where matplotlib is installed (else redraw
it from the JSON with `python benchmarks/serving.py --plot-only` in the main environment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

DOCS = Path(__file__).resolve().parent.parent / "docs"
QUESTION = "Describe the video."


class FirstTokenClock:
    """A `generate` streamer that records when the first new token comes out (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first_token_time: float | None = None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2 and self.first_token_time is None:
            self.first_token_time = time.perf_counter()

    def end(self) -> None:
        pass


class ProcessorClock:
    """Wraps a processor's `__call__` to add up the seconds spent in it (video decoding and preprocessing)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(n: int, wall: float, ttfts: list[float], decode: float, new_tokens: int) -> dict:
    return {
        "requests_per_minute": 60 * n / wall,
        "output_tokens_per_second": n * new_tokens / wall,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "video_decode_share": decode / wall,
        "wall_s": wall,
    }


def run_generate_one_at_a_time(model, processor, prompt, videos, new_tokens) -> dict:
    clock = ProcessorClock()
    call = clock.wrap(processor.__call__)
    start = time.perf_counter()
    ttfts = []
    for video in videos:
        inputs = call(text=prompt, videos=[video], return_tensors="pt")
        first = FirstTokenClock()
        with torch.no_grad():
            model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                streamer=first,
            )
        ttfts.append(first.first_token_time - start)
    return summarize(len(videos), time.perf_counter() - start, ttfts, clock.seconds, new_tokens)


def run_generate_batched(model, processor, prompt, videos, new_tokens) -> dict:
    clock = ProcessorClock()
    call = clock.wrap(processor.__call__)
    start = time.perf_counter()
    processor.tokenizer.padding_side = "left"
    inputs = call(text=[prompt] * len(videos), videos=videos, padding=True, return_tensors="pt")
    first = FirstTokenClock()
    with torch.no_grad():
        model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=first
        )
    wall = time.perf_counter() - start
    # every request of the batch gets its first token at the same step
    return summarize(
        len(videos), wall, [first.first_token_time - start] * len(videos), clock.seconds, new_tokens
    )


def run_vllm(llm, clock: ProcessorClock, prompt, videos, new_tokens) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=0.0)
    requests = [{"prompt": prompt, "multi_modal_data": {"video": video}} for video in videos]
    clock.seconds = 0.0
    wall_start, start = time.time(), time.perf_counter()
    outputs = llm.generate(requests, params, use_tqdm=False)
    wall = time.perf_counter() - start
    # vLLM stamps arrival (wall clock) and the first token's latency after it
    ttfts = [out.metrics.arrival_time + out.metrics.first_token_latency - wall_start for out in outputs]
    assert all(len(out.outputs[0].token_ids) == new_tokens for out in outputs)
    return summarize(len(videos), wall, ttfts, clock.seconds, new_tokens)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for way, by_n in results.items():
        ns = [int(n) for n in by_n]
        left.plot(ns, [by_n[str(n)]["requests_per_minute"] for n in ns], marker="o", label=way)
        right.plot(ns, [by_n[str(n)]["ttft_p50_s"] for n in ns], marker="o", label=way)
    for axis, label in ((left, "requests per minute"), (right, "time to first token, p50 (s)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks([1, 4, 16], ["1", "4", "16"])
        axis.set_xlabel("concurrent video requests")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend()
    figure.suptitle("Tiny Mavors on 2 CPU cores: vLLM (vllm-cpu 0.32) vs model.generate")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=DOCS / "serving_benchmark.json")
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw the plot from --output (needs matplotlib, which the serving environment lacks)",
    )
    args = parser.parse_args(argv)
    if args.plot_only:
        report = json.loads(args.output.read_text())
        plot(report["results"], args.output.with_suffix(".png"))
        return report

    from vllm import LLM

    from transformers_mavors import MavorsProcessor
    from transformers_mavors.integrations import vllm as mavors_vllm
    from transformers_mavors.integrations.serving_testing import build_tiny_serving_checkpoint
    from transformers_mavors.testing_utils import write_sample_video

    workdir = Path(tempfile.mkdtemp(prefix="mavors-serving-bench-"))
    model = build_tiny_serving_checkpoint(workdir / "checkpoint")
    processor = MavorsProcessor.from_pretrained(workdir / "checkpoint")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    # a different 8 s video per request (the processor samples 32 frames, 8 chunks): no cache can help
    videos = [
        str(write_sample_video(workdir / f"video{i}.mp4", num_frames=64, fps=8, seed=i))
        for i in range(max(args.concurrency))
    ]

    vllm_clock = ProcessorClock()
    processor_class = mavors_vllm.MavorsMultiModalProcessor
    processor_class._call_hf_processor = vllm_clock.wrap(processor_class._call_hf_processor)
    llm = LLM(
        model=str(workdir / "checkpoint"),
        dtype="float32",
        max_model_len=2048,
        enforce_eager=True,
        limit_mm_per_prompt={"video": 1},
        enable_prefix_caching=False,  # the same videos recur across runs
        mm_processor_cache_gb=0,
        disable_log_stats=False,  # per-request first-token times
        seed=0,
    )
    ways = {
        "generate, one at a time": lambda batch: run_generate_one_at_a_time(
            model, processor, prompt, batch, args.new_tokens
        ),
        "generate, batched": lambda batch: run_generate_batched(
            model, processor, prompt, batch, args.new_tokens
        ),
        "vLLM": lambda batch: run_vllm(llm, vllm_clock, prompt, batch, args.new_tokens),
    }
    for way in ways.values():  # warm-up: first calls allocate caches and load kernels
        way(videos[:2])

    results: dict[str, dict[str, dict]] = {way: {} for way in ways}
    for n in args.concurrency:
        print(f"N = {n}", flush=True)
        # the ways take turns within each repeat, so a change in the machine's load hits all of them alike
        runs = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, run in ways.items():
                runs[way].append(run(videos[:n]))
        for way, measured in runs.items():
            results[way][str(n)] = {
                key: statistics.median(run[key] for run in measured) for key in measured[0]
            }
    for n in args.concurrency:
        for way in results:
            row = results[way][str(n)]
            print(
                f"N = {n:2d}  {way:24s} {row['requests_per_minute']:8.1f} req/min"
                f"  {row['output_tokens_per_second']:7.1f} tok/s"
                f"  TTFT p50 {row['ttft_p50_s']:.2f} s p95 {row['ttft_p95_s']:.2f} s"
                f"  video decode {100 * row['video_decode_share']:.0f}%",
                flush=True,
            )

    ratios = {
        str(n): {
            "vllm_over_one_at_a_time": results["vLLM"][str(n)]["requests_per_minute"]
            / results["generate, one at a time"][str(n)]["requests_per_minute"],
            "vllm_over_batched": results["vLLM"][str(n)]["requests_per_minute"]
            / results["generate, batched"][str(n)]["requests_per_minute"],
        }
        for n in args.concurrency
    }
    report = {
        "setup": {
            "model": "tiny Mavors (integrations/serving_testing.py), float32",
            "videos": "8 s, 128x96, one per request; 8 chunks of 4 frames after sampling at 4 fps",
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "command": "HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 .venvs/serving/bin/python benchmarks/serving.py",
        },
        "results": results,
        "ratios": ratios,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    llm.llm_engine.engine_core.shutdown()
    try:
        plot(results, args.output.with_suffix(".png"))
    except ImportError:
        print(f"matplotlib is not installed: draw the plot with `python {__file__} --plot-only`")
    return report


if __name__ == "__main__":
    main()
