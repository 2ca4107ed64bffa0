"""The vision encoder's FLOP utilisation: its achieved FLOP/s against `torch.mm` on the GEMM shapes it runs."""

from __future__ import annotations

import statistics
import time

import torch
from tqdm.auto import tqdm

from .config import FRAMES_PER_CHUNK, Setup
from .inputs import mavors_inputs
from .measure import synchronize
from .video import benchmark_frames


def vision_flops(config, chunks: int, height: int, width: int) -> dict:
    """Multiply-add FLOPs (2 per MAC) of `MavorsVisionModel.forward` on one video of `chunks` chunks of h x w patches.

    Counted: the patch GEMM (eq. 1), per ViT layer the q/k/v/o projections, QK^T and AV, the two MLP GEMMs; per
    IFA layer the same with its causal attention counting the unmasked half. Norms, GELU, pooling and rotary
    are not counted (they are not GEMMs).
    """
    n, d = height * width, config.hidden_size
    row = config.num_channels * config.frames_per_chunk * config.patch_size**2
    vit_layer = 8 * n * d * d + 4 * n * n * d + 4 * n * d * config.intermediate_size
    tokens = chunks * n // config.spatial_merge_size**2
    ifa_layer = (
        8 * tokens * d * d + 2 * tokens * (tokens + 1) * d + 4 * tokens * d * config.ifa_intermediate_size
    )
    patch = 2 * n * row * d
    return {
        "patch_embedding": chunks * patch,
        "vit_layers": chunks * config.num_hidden_layers * vit_layer,
        "ifa_layers": config.ifa_num_hidden_layers * ifa_layer,
        "per_chunk": patch
        + config.num_hidden_layers * vit_layer
        + config.ifa_num_hidden_layers * ifa_layer / chunks,
    }


def vision_gemm_shapes(config, chunks: int, height: int, width: int) -> list[tuple[int, int, int]]:
    """The `(M, K, N)` GEMMs the encoder runs on such a video (M rows of the largest micro-batch)."""
    d, n = config.hidden_size, height * width
    rows = min(chunks, config.vision_chunk_batch_size) * n
    tokens = chunks * n // config.spatial_merge_size**2
    row = config.num_channels * config.frames_per_chunk * config.patch_size**2
    shapes = [
        (rows, row, d),
        (rows, d, d),
        (rows, d, config.intermediate_size),
        (rows, config.intermediate_size, d),
    ]
    if config.ifa_num_hidden_layers:
        shapes += [
            (tokens, d, d),
            (tokens, d, config.ifa_intermediate_size),
            (tokens, config.ifa_intermediate_size, d),
        ]
    return shapes


def best_mm_rate(operands: dict, device: torch.device, tries: int = 2) -> float:
    """Best FLOP/s of `torch.mm` over the given shapes (each timed `tries` times, best kept)."""
    best = 0.0
    for (m, k, n), (a, b) in operands.items():
        for _ in range(tries):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def run_utilisation(setup: Setup, mavors, device: torch.device, chunks: int, rounds: int) -> dict:
    """Achieved FLOP/s of the vision encoder against the best `torch.mm` rate on its own GEMM shapes.

    Each round times one `MavorsVisionModel.forward` (IVE + IFA) on the benchmark video, then `torch.mm` on every
    GEMM shape it runs, so machine noise hits both alike. Interference from other jobs only ever slows a run, so
    the headline `fraction` is the fastest encoder round over the fastest `torch.mm` (best of rounds over best of
    shapes and rounds); `median_round_fraction` is the median of the per-round ratios.
    """
    vision = mavors.model.vision_model
    config = vision.config
    frames = benchmark_frames(chunks * FRAMES_PER_CHUNK, setup.height, setup.width)
    inputs, _ = mavors_inputs(frames)
    pixels = inputs["pixel_values_videos"].to(device, setup.torch_dtype)
    grid = inputs["video_grid_thw"].to(device)
    _, h, w = grid[0].tolist()
    flops = vision_flops(config, chunks, h, w)
    total = flops["patch_embedding"] + flops["vit_layers"] + flops["ifa_layers"]
    shapes = vision_gemm_shapes(config, chunks, h, w)
    operands = {
        s: (
            torch.randn(s[0], s[1], device=device, dtype=setup.torch_dtype),
            torch.randn(s[1], s[2], device=device, dtype=setup.torch_dtype),
        )
        for s in shapes
    }
    encoder_rates, mm_rates, fractions = [], [], []
    with torch.inference_mode():
        vision(pixels, grid)  # warm-up
        best_mm_rate(operands, device, tries=1)
        for _ in tqdm(range(rounds), desc="Vision utilisation", unit="round"):
            synchronize(device)
            start = time.perf_counter()
            vision(pixels, grid)
            synchronize(device)
            rate = total / (time.perf_counter() - start)
            reference = best_mm_rate(operands, device)
            encoder_rates.append(rate)
            mm_rates.append(reference)
            fractions.append(rate / reference)
    return {
        "chunks": chunks,
        "grid": [h, w],
        "vision_chunk_batch_size": config.vision_chunk_batch_size,
        "gflop_per_chunk": flops["per_chunk"] / 1e9,
        "gflop_total": total / 1e9,
        "gflop_breakdown": {k: v / 1e9 for k, v in flops.items() if k != "per_chunk"},
        "gemm_shapes": shapes,
        "encoder_gflops": max(encoder_rates) / 1e9,
        "mm_best_gflops": max(mm_rates) / 1e9,
        "fraction": max(encoder_rates) / max(mm_rates),
        "median_round_fraction": statistics.median(fractions),
        "round_fractions": fractions,
        "rounds": rounds,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
