"""The vision encoder's FLOP utilisation: its achieved FLOP/s against `torch.mm` on the GEMM shapes it runs."""

from __future__ import annotations

import statistics
import time

import torch
from tqdm.auto import tqdm

from transformers_mavors.cpu_kernels import onednn_available

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
    return _best_rate(operands, device, tries, lambda a, b, b_t: torch.mm(a, b))


def best_onednn_rate(operands: dict, device: torch.device, tries: int = 2) -> float | None:
    """Best FLOP/s of oneDNN's linear (the GEMM `fused_cpu_kernels` runs) over the shapes; `None` off CPU."""
    if device.type != "cpu" or not onednn_available():
        return None
    return _best_rate(
        operands,
        device,
        tries,
        lambda a, b, b_t: torch.ops.mkldnn._linear_pointwise(a, b_t, None, "none", [], ""),
    )


def _best_rate(operands: dict, device: torch.device, tries: int, gemm) -> float:
    best = 0.0
    for (m, k, n), (a, b, b_t) in operands.items():
        for _ in range(tries):
            synchronize(device)
            start = time.perf_counter()
            gemm(a, b, b_t)
            synchronize(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def run_utilisation(setup: Setup, mavors, device: torch.device, chunks: int, rounds: int) -> dict:
    """Achieved FLOP/s of the vision encoder against the best GEMM rate on its own GEMM shapes.

    Each round times one `MavorsVisionModel.forward` (IVE + IFA) on the benchmark video, then `torch.mm` and (on
    CPU) oneDNN's linear on every GEMM shape it runs, so machine noise hits all alike. Interference from other
    jobs only ever slows a run, so a headline fraction is the fastest encoder round over the fastest GEMM (best
    of rounds over best of shapes and rounds); the `median_round_*` figures are medians of per-round ratios.
    `fraction` is against `torch.mm` (MKL on x86 CPUs); `fraction_of_best_gemm` against the faster of `torch.mm`
    and oneDNN, the library the fused CPU path uses, which is the machine's limit when MKL is not (AMD CPUs).
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
    operands = {}
    for m, k, n in shapes:
        b = torch.randn(k, n, device=device, dtype=setup.torch_dtype)
        operands[m, k, n] = (torch.randn(m, k, device=device, dtype=setup.torch_dtype), b, b.t().contiguous())
    encoder_rates, mm_rates, onednn_rates, fractions, best_fractions = [], [], [], [], []
    with torch.inference_mode():
        vision(pixels, grid)  # warm-up
        best_mm_rate(operands, device, tries=1)
        best_onednn_rate(operands, device, tries=1)
        for _ in tqdm(range(rounds), desc="Vision utilisation", unit="round"):
            synchronize(device)
            start = time.perf_counter()
            vision(pixels, grid)
            synchronize(device)
            rate = total / (time.perf_counter() - start)
            reference = best_mm_rate(operands, device)
            onednn = best_onednn_rate(operands, device)
            encoder_rates.append(rate)
            mm_rates.append(reference)
            fractions.append(rate / reference)
            if onednn is not None:
                onednn_rates.append(onednn)
            best_fractions.append(rate / max(reference, onednn or 0.0))
    best_gemm = max(mm_rates + onednn_rates)
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
        "onednn_best_gflops": max(onednn_rates) / 1e9 if onednn_rates else None,
        "best_gemm_gflops": best_gemm / 1e9,
        "fraction_of_best_gemm": max(encoder_rates) / best_gemm,
        "median_round_fraction_of_best_gemm": statistics.median(best_fractions),
        "round_fractions_of_best_gemm": best_fractions,
        "fused_cpu_kernels": bool(config.fused_cpu_kernels),
        "rounds": rounds,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
