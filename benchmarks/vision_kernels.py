"""Where the vision encoder's CPU time goes, and what each fusion lever buys (docs/performance.md).

Two parts, on the peer benchmark's CPU tower (SigLIP-so400m widths, 3 ViT layers, 1 IFA layer; 16 chunks of
448x252 frames = one ViT micro-batch of 16 x 18x32 patches):

- `profile`: torch's profiler over one ViT micro-batch (`encode_chunks`) and one IFA call, with the fused CPU
  kernels off and on; self time per op, grouped into GEMM, attention, GELU, bias copies, residual adds, layer
  norms, pooling and the rest.
- `levers`: the whole `MavorsVisionModel.forward`, timed in interleaved rounds for each lever (so machine noise
  hits all alike): transformers' modules (the baseline), oneDNN GEMMs without fused epilogues, the shipped path
  (GELU and residual adds fused into the GEMMs), optionally `torch.compile` of the unfused tower, and the shipped
  path in bf16 next to oneDNN's bf16 GEMM rate on the same shapes. Medians and ratios to the baseline.

    python benchmarks/vision_kernels.py --json docs/vision_kernels.json --plot docs/vision_kernels.png
    python benchmarks/vision_kernels.py --quick            # 4 chunks of 224x140, < 1 min
    python benchmarks/vision_kernels.py --compile          # adds the torch.compile lever (minutes to compile)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.config import FRAMES_PER_CHUNK, Setup  # noqa: E402
from peers.inputs import mavors_inputs  # noqa: E402
from peers.models import build_mavors, text_config  # noqa: E402
from peers.utilisation import vision_flops, vision_gemm_shapes  # noqa: E402
from peers.video import benchmark_frames  # noqa: E402

from transformers_mavors import cpu_kernels, modeling_mavors  # noqa: E402

GROUPS = {  # profiler op name -> group; anything else is "other"
    "aten::addmm": "GEMM",
    "aten::mm": "GEMM",
    "aten::bmm": "GEMM",
    "mkldnn::_linear_pointwise": "GEMM",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::gelu": "GELU",
    "aten::copy_": "bias copies",
    "aten::add": "residual adds",
    "aten::add_": "residual adds",
    "aten::native_layer_norm": "layer norm",
    "aten::sum": "pooling",
    "aten::mean": "pooling",
}


def build_tower(width: int, height: int, chunks: int, tiny: bool = False):
    setup = Setup(
        tiny=tiny,
        device="cpu",
        dtype="float32",
        llm="tiny" if tiny else "0.5b",  # only the vision tower is used
        depth_divisor=1 if tiny else 8,
        width=width,
        height=height,
        frames=[chunks * FRAMES_PER_CHUNK],
        repeats=3,
        decode_tokens=1,
    )
    torch.manual_seed(0)
    vision = build_mavors(setup, text_config(setup)).model.vision_model.eval()
    # a fresh aggregator is the identity (zero output projections): give it weights, so the IFA really computes
    with torch.no_grad():
        for module in vision.aggregator.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(std=0.02)
    inputs, _ = mavors_inputs(benchmark_frames(chunks * FRAMES_PER_CHUNK, height, width))
    return vision, inputs["pixel_values_videos"], inputs["video_grid_thw"]


def profile_parts(vision, pixels, grid) -> dict:
    """Self time per op group of one ViT micro-batch and of one IFA call, fused kernels off and on."""
    _, h, w = grid[0].tolist()
    rows = pixels.view(-1, h * w, pixels.shape[-1])[: vision.config.vision_chunk_batch_size]
    result = {}
    for fused in (False, True):
        vision.config.fused_cpu_kernels = fused
        with torch.inference_mode():
            pooled = vision.encode_chunks(rows, h, w)  # warm-up
            tokens = pooled.flatten(0, 1)[None]
            positions = torch.arange(rows.shape[0])[None]
            parts = {
                "vit_micro_batch": lambda: vision.encode_chunks(rows, h, w),
                "ifa": lambda t=tokens, p=positions, n=pooled.shape[1]: vision.aggregator(t, p, n),
            }
            for name, run in parts.items():
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    run()
                groups: dict[str, float] = {}
                for event in prof.key_averages():
                    group = GROUPS.get(event.key, "other")
                    groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
                total = sum(groups.values())
                result[f"{name}_{'fused' if fused else 'unfused'}"] = {
                    "total_s": total,
                    "share": {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
                }
    return result


@contextlib.contextmanager
def unfused_epilogues():
    """oneDNN GEMMs, but bias-only: GELU and residual adds as separate ops (the 'oneDNN GEMM only' lever)."""
    original = cpu_kernels.fused_linear

    def plain(module, hidden, enabled, activation=None, residual=None):
        out = original(module, hidden, enabled)
        if activation is not None:
            out = cpu_kernels._activation(activation)(out)
        return out if residual is None else residual + out

    cpu_kernels.fused_linear = modeling_mavors.fused_linear = plain
    try:
        yield
    finally:
        cpu_kernels.fused_linear = modeling_mavors.fused_linear = original


def gemm_peak(shapes, dtype: torch.dtype, tries: int = 3) -> float:
    """Best FLOP/s of oneDNN's linear over the tower's GEMM shapes in `dtype`."""
    best = 0.0
    with torch.inference_mode():
        for m, k, n in shapes:
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
            torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
            for _ in range(tries):
                start = time.perf_counter()
                torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
                best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def run_levers(vision, pixels, grid, rounds: int, compile_tower: bool) -> dict:
    _, h, w = grid[0].tolist()
    chunks = grid[0, 0].item()
    flops = vision_flops(vision.config, chunks, h, w)
    total = flops["patch_embedding"] + flops["vit_layers"] + flops["ifa_layers"]
    bf16_tower = None
    levers: dict[str, callable] = {}

    def with_switch(fused: bool, tower=vision, inputs=pixels):
        def run():
            tower.config.fused_cpu_kernels = fused
            return tower(inputs, grid).last_hidden_state

        return run

    levers["transformers modules (baseline)"] = with_switch(False)

    def onednn_only():
        with unfused_epilogues():
            return with_switch(True)()

    levers["oneDNN GEMMs, epilogues unfused"] = onednn_only
    levers["oneDNN GEMMs + fused bias/GELU/residual (shipped)"] = with_switch(True)
    compile_s = None
    if compile_tower:
        vision.config.fused_cpu_kernels = False
        compiled = torch.compile(vision.encoder)
        start = time.perf_counter()
        with torch.inference_mode():
            original = vision.encoder
            vision.encoder = compiled
            try:
                vision(pixels, grid)
            finally:
                vision.encoder = original
        compile_s = time.perf_counter() - start

        def compiled_run():
            vision.config.fused_cpu_kernels = False
            vision.encoder = compiled
            try:
                return vision(pixels, grid).last_hidden_state
            finally:
                vision.encoder = original

        levers["torch.compile of the ViT (inductor)"] = compiled_run
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        import copy

        bf16_tower = copy.deepcopy(vision).to(torch.bfloat16)
        levers["shipped path in bf16"] = with_switch(True, bf16_tower, pixels.to(torch.bfloat16))

    times: dict[str, list[float]] = {name: [] for name in levers}
    outputs = {}
    with torch.inference_mode():
        for name, run in levers.items():  # warm-up, and each lever's output for the accuracy column
            outputs[name] = run().float()
        for _ in tqdm(range(rounds), desc="Vision levers", unit="round"):
            for name, run in levers.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    baseline_name = "transformers modules (baseline)"
    baseline = statistics.median(times[baseline_name])
    reference = outputs[baseline_name]
    shapes = vision_gemm_shapes(vision.config, chunks, h, w)
    rows = []
    for name in levers:
        median = statistics.median(times[name])
        rows.append(
            {
                "lever": name,
                "median_s": median,
                "speedup": baseline / median,
                "gflops": total / median / 1e9,
                "max_abs_diff_vs_baseline": (outputs[name] - reference).abs().max().item(),
                "round_s": times[name],
            }
        )
    return {
        "gflop_total": total / 1e9,
        "rounds": rounds,
        "compile_s": compile_s,
        "output_max_abs": reference.abs().max().item(),
        "onednn_fp32_peak_gflops": gemm_peak(shapes, torch.float32) / 1e9,
        "onednn_bf16_peak_gflops": gemm_peak(shapes, torch.bfloat16) / 1e9
        if bf16_tower is not None
        else None,
        "levers": rows,
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    levers = report["levers"]["levers"]
    names = [row["lever"] for row in levers]
    left.barh(names, [row["speedup"] for row in levers], color="tab:blue")
    for i, row in enumerate(levers):
        left.text(row["speedup"], i, f" {row['speedup']:.2f}x ({row['gflops']:.0f} GFLOP/s)", va="center")
    left.invert_yaxis()
    left.set_xlabel("speed-up of the vision forward over transformers' modules (median of rounds)")
    left.set_xlim(0, max(row["speedup"] for row in levers) * 1.45)
    parts = report["profile"]
    labels = list(parts)
    groups = sorted({g for part in parts.values() for g in part["share"]}, key=lambda g: g != "GEMM")
    bottom = [0.0] * len(labels)
    for group in groups:
        seconds = [parts[label]["total_s"] * parts[label]["share"].get(group, 0.0) for label in labels]
        right.bar(labels, seconds, bottom=bottom, label=group)
        bottom = [b + s for b, s in zip(bottom, seconds, strict=True)]
    right.set_ylabel("self CPU time (s), one call")
    right.legend(fontsize=8)
    right.tick_params(axis="x", labelrotation=15)
    fig.suptitle(
        f"Mavors vision encoder on {report['device']}, {report['size']}, {report['threads']} threads"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 chunks of 224x140")
    parser.add_argument("--tiny", action="store_true", help="tiny widths, 2 chunks of 56x28 (for tests)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved timed rounds (default 5, at least 3)"
    )
    parser.add_argument("--compile", action="store_true", help="add the torch.compile lever")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error(f"--rounds must be >= 3 (medians of at least 3 rounds), got {args.rounds}")
    if not cpu_kernels.onednn_available():
        parser.error("this torch build has no oneDNN: the fused CPU kernels cannot run")
    width, height, chunks = (56, 28, 2) if args.tiny else (224, 140, 4) if args.quick else (448, 252, 16)
    vision, pixels, grid = build_tower(width, height, chunks, tiny=args.tiny)
    report = {
        "device": "cpu",
        "size": f"{chunks} chunks of {width}x{height}",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "profile": profile_parts(vision, pixels, grid),
        "levers": run_levers(vision, pixels, grid, args.rounds, args.compile),
    }
    for part, row in report["profile"].items():
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["share"].items())
        print(f"{part}: {row['total_s']:.3f} s: {shares}")
    levers = report["levers"]
    print(
        f"\n| lever | median s | speed-up | GFLOP/s | max |diff| vs baseline |  ({levers['gflop_total']:.0f} GFLOP)"
    )
    print("|---|---|---|---|---|")
    for row in levers["levers"]:
        print(
            f"| {row['lever']} | {row['median_s']:.3f} | {row['speedup']:.2f}x | {row['gflops']:.1f} | "
            f"{row['max_abs_diff_vs_baseline']:.2e} |"
        )
    print(
        f"oneDNN GEMM peak on the tower's shapes: fp32 {levers['onednn_fp32_peak_gflops']:.1f} GFLOP/s, bf16 "
        f"{levers['onednn_bf16_peak_gflops'] or float('nan'):.1f} GFLOP/s"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return report


if __name__ == "__main__":
    main()
