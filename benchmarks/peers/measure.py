"""The probes every section uses: a clock on generation steps, a peak-memory probe, one timed `generate`, and the
machine itself (the CPU thread count that runs fastest, the device's name)."""

from __future__ import annotations

import functools
import platform
import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class StepClock(LogitsProcessor):
    """Records the time at which each generation step's logits arrive (step 0 = the end of the prefill)."""

    def __init__(self, on_first=None):
        self.times: list[float] = []
        self.on_first = on_first

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        if len(self.times) == 1 and self.on_first is not None:
            self.on_first()
            self.times.append(time.perf_counter())  # decode is timed from here, after the memory probe stops
        return scores


class MemoryProbe:
    """Peak of live tensor bytes allocated between `start()` and `stop()` (CPU: profiler events; GPU: CUDA stats).

    On CPU, `window_peak(label)` also gives the peak reached inside `torch.profiler.record_function(label)`
    blocks, above what was live when each block began.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self._profiler = None
        self._timeline: list[tuple[int, int]] = []
        self._windows: dict[str, list[tuple[int, int]]] = {}

    def start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            from torch.profiler import ProfilerActivity, profile

            self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._profiler.start()

    def stop(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
            return
        self._profiler.stop()
        events = self._profiler.profiler.kineto_results.events()
        self._profiler = None
        allocations = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        for event in events:
            if event.name() != "[memory]" and event.name().startswith("probe:"):
                window = (event.start_ns(), event.start_ns() + event.duration_ns())
                self._windows.setdefault(event.name().removeprefix("probe:"), []).append(window)
        live = peak = 0
        for when, nbytes in allocations:
            live += nbytes
            peak = max(peak, live)
            self._timeline.append((when, live))
        self.peak = peak

    def window_peak(self, label: str) -> int:
        best = 0
        for begin, end in self._windows.get(label, []):
            before = [live for when, live in self._timeline if when < begin]
            inside = [live for when, live in self._timeline if begin <= when <= end]
            if inside:
                best = max(best, max(inside) - (before[-1] if before else 0))
        return best


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU (nothing to wait for on a CPU), so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def tensor_bytes(tensors) -> int:
    """Bytes of the distinct tensors (by storage) among `tensors`; non-tensors are ignored."""
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def timed_generate(model, inputs: dict, new_tokens: int, measure_memory: bool) -> dict:
    """One `generate` call: vision time, time to first token, decode tokens/s, prefill peak memory (bytes)."""
    device = next(model.parameters()).device
    vision_times = []
    base = model.model
    original = getattr(base, "get_video_features", None)
    if original is not None:

        @functools.wraps(original)
        def timed_features(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            synchronize(device)
            vision_times.append(time.perf_counter() - start)
            return out

        base.get_video_features = timed_features
    probe = MemoryProbe(device)
    clock = StepClock(on_first=probe.stop if measure_memory else None)
    try:
        if measure_memory:
            probe.start()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
                logits_processor=LogitsProcessorList([clock]),
            )
        synchronize(device)
        end = time.perf_counter()
    finally:
        if original is not None:
            del base.get_video_features
    times = clock.times
    decode_start = times[1] if measure_memory else times[0]
    decode_steps = len(times) - (2 if measure_memory else 1)
    return {
        "vision_s": sum(vision_times),
        "ttft_s": times[0] - start,
        "decode_tokens_per_s": decode_steps / (times[-1] - decode_start) if decode_steps else float("nan"),
        "total_s": end - start,
        "peak_bytes": probe.peak if measure_memory else None,
    }


def pick_threads(candidates: list[int]) -> tuple[int, dict]:
    """The CPU thread count (of `candidates`) that runs a transformer-layer-like workload fastest, all models alike.

    The workload is LayerNorm -> 1152x4304 GEMM -> GELU -> 4304x1152 GEMM -> residual add on 640 tokens, three
    times, the op mix every model here runs. On a machine shared with other jobs, more OpenMP threads than free
    cores make every op wait at its barrier for a descheduled thread, and one thread beats two.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(640, 1152, generator=generator)
    up, down = torch.randn(1152, 4304, generator=generator), torch.randn(4304, 1152, generator=generator)

    def workload():
        h = x
        for _ in range(3):
            h = (
                h
                + torch.nn.functional.gelu(
                    torch.nn.functional.layer_norm(h, (1152,)) @ up, approximate="tanh"
                )
                @ down
            )
        return h

    timings = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        workload()
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            workload()
            runs.append(time.perf_counter() - start)
        timings[threads] = statistics.median(runs)
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best, timings


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
