"""Visual tokens kept by Mavors' token compression (paper §5.4) against the similarity threshold.

Runs the peer benchmark's video (`benchmark_frames` of `benchmarks/peers/video.py`, the same frames the peer
comparison feeds every model) through the Mavors-7B video processor (R_v = 384, 16-frame chunks, taken as sampled
at 4 fps), then, for each threshold, counts the tokens `merge_similar_chunk_tokens` keeps: the function
`MavorsVisionModel.forward` applies between the IVE and the IFA, run here on the pooled IVE features of each
feature source below (the ViT runs once per source; the merge is what changes with the threshold). One threshold
per source is cross-checked against `token_counts` from the full `MavorsVisionModel.forward`.

Which features? Token compression compares *learned* features, and no trained SigLIP or Mavors weights are
available offline. A randomly initialised ViT gives features whose similarities say nothing about the video, so
the headline numbers come from sources whose similarities follow the pixels:

- `pixels`: the pooled, normalised pixel patches themselves (each chunk's 2x2 group of (C, F, 14, 14) patches,
  averaged): what a perfectly pixel-faithful encoder would compare;
- `projection`: a Mavors-7B-width `MavorsVisionModel` (d = 1152) with no ViT layers, a Gaussian random 3D patch
  kernel, no position table and an identity post-layernorm: a random projection of the pixels, which keeps cosine
  similarities to about +-1/sqrt(1152) (Johnson-Lindenstrauss), through the model's own code path;
- `random-vit` (contrast only): Mavors-7B widths, ViT depth 27/8 -> 3 layers as in the peer benchmark's CPU mode,
  transformers' default random initialisation. Its numbers show the plumbing, not the method.

    python benchmarks/compression.py                                   # 64 and 256 frames, 448x252
    python benchmarks/compression.py --frames 64 --json out.json --plot docs/compression.png
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from transformers_mavors import MavorsVideoProcessor, MavorsVisionConfig, MavorsVisionModel
from transformers_mavors.modeling_mavors import merge_similar_chunk_tokens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.video import benchmark_frames  # noqa: E402  (the peer benchmark's video)

FRAME_SOURCE = "benchmarks/peers/video.py: benchmark_frames"

DEFAULT_THRESHOLDS = [None, 0.99, 0.95, 0.9, 0.8, 0.7]
SOURCES = ("pixels", "projection", "random-vit")


def parse_threshold(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def mavors_7b_vision(**overrides) -> MavorsVisionModel:
    """Mavors-7B's vision widths (SigLIP-so400m-patch14-384, F = 16) with `overrides`, in fp32, eval mode."""
    config = MavorsVisionConfig(ifa_num_hidden_layers=0, **overrides)
    return MavorsVisionModel(config).eval()


def projection_tower(seed: int) -> MavorsVisionModel:
    """No ViT layers, Gaussian patch kernel, zero position table, identity layernorm: a random pixel projection."""
    tower = mavors_7b_vision(num_hidden_layers=0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = tower.embeddings.patch_embedding.weight
        weight.copy_(torch.randn(weight.shape, generator=generator))
        tower.embeddings.patch_embedding.bias.zero_()
        tower.embeddings.position_embedding.weight.zero_()
        tower.post_layernorm.weight.fill_(1.0)
        tower.post_layernorm.bias.zero_()
    return tower


def random_vit(seed: int) -> MavorsVisionModel:
    torch.manual_seed(seed)
    return mavors_7b_vision(num_hidden_layers=3)


def pooled_pixels(rows: torch.Tensor, grid: list[int], merge: int = 2) -> torch.Tensor:
    """`(t*h*w, C*F*p*p)` patch rows -> `(t, h*w/4, C*F*p*p)`: each 2x2 group of patches averaged."""
    t, h, w = grid
    patches = rows.view(t, h // merge, merge, w // merge, merge, -1)
    return patches.mean(dim=(2, 4)).flatten(1, 2)


def pooled_features(source: str, rows: torch.Tensor, grid: list[int], seed: int) -> torch.Tensor:
    if source == "pixels":
        return pooled_pixels(rows, grid)
    tower = projection_tower(seed) if source == "projection" else random_vit(seed)
    t, h, w = grid
    with torch.no_grad():
        return tower.encode_chunks(rows.view(t, h * w, -1), h, w)


def forward_token_count(rows, grid, positions, threshold: float, seed: int) -> int:
    """The same count through `MavorsVisionModel.forward` (projection tower): the cross-check."""
    with torch.no_grad():
        out = projection_tower(seed)(
            rows, torch.tensor([grid]), positions, token_compression_threshold=threshold
        )
    return int(out.token_counts[0])


def run(frames_list, height, width, thresholds, sources, seed) -> dict:
    processor = MavorsVideoProcessor()  # Mavors-7B settings: R_v = 384, patch 14, F = 16, 4 fps
    results = []
    for num_frames in frames_list:
        frames = np.asarray(benchmark_frames(num_frames, height, width, seed=seed))
        # every frame kept (no accelerated playback): the benchmark compares equal frames across models
        inputs = processor(frames, max_chunks=-(-num_frames // processor.frames_per_chunk))
        rows, positions = inputs["pixel_values_videos"], inputs["video_chunk_positions"]
        grid = inputs["video_grid_thw"][0].tolist()
        full = grid[0] * (grid[1] // 2) * (grid[2] // 2)
        for source in sources:
            start = time.perf_counter()
            pooled = pooled_features(source, rows, grid, seed)
            encode_s = time.perf_counter() - start
            for threshold in thresholds:
                kept = full
                if threshold is not None:
                    kept = len(merge_similar_chunk_tokens(pooled, positions, threshold)[0])
                results.append(
                    {
                        "frames": num_frames,
                        "chunks": grid[0],
                        "source": source,
                        "threshold": threshold,
                        "visual_tokens": full,
                        "kept_tokens": kept,
                        "kept_ratio": kept / full,
                        "encode_s": round(encode_s, 3),
                    }
                )
            if source == "projection":
                check = next(t for t in thresholds if t is not None)
                via_forward = forward_token_count(rows, grid, positions, check, seed)
                expected = next(
                    r["kept_tokens"]
                    for r in results
                    if r["frames"] == num_frames and r["source"] == source and r["threshold"] == check
                )
                if via_forward != expected:
                    raise RuntimeError(
                        f"MavorsVisionModel.forward kept {via_forward} tokens at threshold {check}, the merge "
                        f"function {expected}"
                    )
    return {
        "device": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "video": {
            "frames_from": FRAME_SOURCE,
            "height": height,
            "width": width,
            "processor": "Mavors-7B (R_v 384, patch 14, F 16, 4 fps)",
        },
        "results": results,
    }


def print_table(report: dict) -> None:
    rows = report["results"]
    sources = list(dict.fromkeys(r["source"] for r in rows))
    thresholds = list(dict.fromkeys(r["threshold"] for r in rows))
    for num_frames in dict.fromkeys(r["frames"] for r in rows):
        subset = [r for r in rows if r["frames"] == num_frames]
        print(
            f"\n{num_frames} frames ({subset[0]['chunks']} chunks, {subset[0]['visual_tokens']} visual tokens "
            "uncompressed): tokens kept (share)"
        )
        print(f"{'threshold':>10}  " + "  ".join(f"{source:>16}" for source in sources))
        for threshold in thresholds:
            cells = []
            for source in sources:
                r = next(r for r in subset if r["source"] == source and r["threshold"] == threshold)
                cells.append(f"{r['kept_tokens']:>8} ({r['kept_ratio']:>4.0%})")
            label = "off" if threshold is None else f"{threshold:g}"
            print(f"{label:>10}  " + "  ".join(f"{cell:>16}" for cell in cells))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    thresholds = list(dict.fromkeys(r["threshold"] for r in rows))
    labels = ["off" if t is None else f"{t:g}" for t in thresholds]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"pixels": "-", "projection": "--", "random-vit": ":"}
    for color, num_frames in enumerate(dict.fromkeys(r["frames"] for r in rows)):
        for source in dict.fromkeys(r["source"] for r in rows):
            ratios = [
                next(
                    r["kept_ratio"]
                    for r in rows
                    if r["frames"] == num_frames and r["source"] == source and r["threshold"] == t
                )
                for t in thresholds
            ]
            ax.plot(
                labels,
                ratios,
                styles.get(source, "-"),
                color=f"C{color}",
                marker="o",
                label=f"{source}, {num_frames} frames",
            )
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("similarity threshold (cosine; lower merges more)")
    ax.set_ylabel("visual tokens kept (share of uncompressed)")
    height, width = report["video"]["height"], report["video"]["width"]
    video = "benchmark video" if report["video"]["frames_from"].startswith("benchmarks/") else "sample video"
    ax.set_title(f"Mavors token compression on the {video} ({width}x{height})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--frames", type=int, nargs="+", default=[64, 256], help="video lengths (default 64 256)"
    )
    parser.add_argument("--height", type=int, default=252)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument(
        "--thresholds",
        type=parse_threshold,
        nargs="+",
        default=DEFAULT_THRESHOLDS,
        help="cosine thresholds; 'off' for no compression (default: off 0.99 0.95 0.9 0.8 0.7)",
    )
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="draw tokens kept against threshold to this PNG")
    args = parser.parse_args(argv)

    print(f"frames: {FRAME_SOURCE}")
    report = run(args.frames, args.height, args.width, args.thresholds, args.sources, args.seed)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
