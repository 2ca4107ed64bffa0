"""The side-by-side section: every model at every frame count, in interleaved rounds, plus the bare LLM's decode."""

from __future__ import annotations

import statistics

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from .config import Setup
from .inputs import INPUT_BUILDERS
from .measure import tensor_bytes, timed_generate
from .video import benchmark_frames

logger = logging.get_logger("transformers_mavors.benchmarks.peers")


def run_peers(setup: Setup, models: dict, bare_llm, device: torch.device) -> dict:
    """The side-by-side table: every model at every frame count, rounds interleaved across models."""
    results, details, decode, ratios = [], [], [], {}
    param_bytes = {
        name: tensor_bytes(model.parameters()) for name, model in models.items()
    }  # shared LLM in each
    new_tokens = 1 + setup.decode_tokens
    for num_frames in setup.frames:
        frames = benchmark_frames(num_frames, setup.height, setup.width)
        inputs, tokens = build_inputs(models, frames, device)
        input_bytes = {name: tensor_bytes(inputs[name].values()) for name in models}
        context = inputs["mavors"]["input_ids"].shape[1]
        inputs["bare_llm"] = bare_llm_inputs(context, device)
        runners = {**models, "bare_llm": bare_llm}
        warm_up = num_frames == setup.frames[0]  # one warm-up round per model, before the first frame count
        runs, skipped = interleaved_rounds(runners, inputs, new_tokens, setup.repeats, warm_up, num_frames)
        for name in models:
            if name in skipped:
                continue
            own = runs[name]
            results.append(
                {
                    "model": name,
                    "frames": num_frames,
                    "visual_tokens": tokens[name],
                    "vision_s": statistics.median(r["vision_s"] for r in own),
                    "ttft_s": statistics.median(r["ttft_s"] for r in own),
                    "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in own),
                    "peak_mem_mb": (param_bytes[name] + input_bytes[name] + max(r["peak_bytes"] for r in own))
                    / 2**20,
                }
            )
            details.append(
                {
                    "model": name,
                    "frames": num_frames,
                    "context_tokens": int(inputs[name]["input_ids"].shape[1]),
                    "parameter_mb": param_bytes[name] / 2**20,
                    "input_mb": input_bytes[name] / 2**20,
                    "prefill_transient_peak_mb": max(r["peak_bytes"] for r in own) / 2**20,
                    "runs": [{k: r[k] for k in ("vision_s", "ttft_s", "decode_tokens_per_s")} for r in own],
                }
            )
            if name != "mavors" and "mavors" not in skipped:
                ratios[f"{name}/mavors@{num_frames}"] = {
                    key: statistics.median(
                        peer[key] / ours[key] for peer, ours in zip(own, runs["mavors"], strict=True)
                    )
                    for key in ("ttft_s", "vision_s")
                } | {"visual_tokens": tokens[name] / tokens["mavors"]}
        decode.append(decode_row(num_frames, context, runs["mavors"], runs["bare_llm"]))
    return {"results": results, "ratios": ratios, "decode": decode, "details": details}


def build_inputs(models: dict, frames, device: torch.device) -> tuple[dict, dict]:
    """Each model's inputs for `frames`, on `device`, and the visual tokens each one's prompt holds."""
    inputs, tokens = {}, {}
    for name in models:
        built, tokens[name] = INPUT_BUILDERS[name](frames)
        inputs[name] = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in built.items()}
    return inputs, tokens


def bare_llm_inputs(context: int, device: torch.device) -> dict:
    """Seeded random text ids of Mavors' context length: what the bare LLM decodes after."""
    bare_ids = torch.randint(1000, 150000, (1, context), generator=torch.Generator().manual_seed(0))
    return {"input_ids": bare_ids.to(device), "attention_mask": torch.ones_like(bare_ids).to(device)}


def interleaved_rounds(
    runners: dict, inputs: dict, new_tokens: int, repeats: int, warm_up: bool, num_frames: int
) -> tuple[dict[str, list[dict]], set]:
    """`repeats` rounds (after a warm-up round when `warm_up`), each running every model once, in turn.

    Load from other jobs then hits all models alike. A model that runs out of memory is skipped from then on.
    Returns each model's timed runs (`timed_generate` results) and the names of the skipped ones.
    """
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    skipped = set()
    steps = tqdm(
        total=len(runners) * (repeats + warm_up),
        desc=f"{num_frames} frames",
        unit="run",
        mininterval=1,
    )
    for round_index in range(repeats + warm_up):
        for name, model in runners.items():
            if name in skipped:
                steps.update()
                continue
            try:
                run = timed_generate(model, inputs[name], new_tokens, measure_memory=name != "bare_llm")
            except torch.OutOfMemoryError:
                logger.warning(f"{name} at {num_frames} frames ran out of memory; skipped")
                skipped.add(name)
                torch.cuda.empty_cache()
                steps.update()
                continue
            if round_index or not warm_up:
                runs[name].append(run)
            steps.update()
    steps.close()
    return runs, skipped


def decode_row(num_frames: int, context: int, mavors_runs: list[dict], bare_runs: list[dict]) -> dict:
    """Mavors' decode rate against the bare LLM's at the same context: medians, and the median per-round ratio."""
    return {
        "frames": num_frames,
        "context_tokens": context,
        "mavors_decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in mavors_runs),
        "bare_llm_decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in bare_runs),
        "ratio": statistics.median(
            m["decode_tokens_per_s"] / b["decode_tokens_per_s"]
            for m, b in zip(mavors_runs, bare_runs, strict=True)
        ),
    }
