"""The report: the tables printed after a run (or from a saved JSON) and the two plots."""

from __future__ import annotations

from pathlib import Path

from .config import FPS, FRAMES_PER_CHUNK, MODELS


def print_report(report: dict) -> None:
    setup = report["setup"]
    print(
        f"\n{report['device']}: {setup['width']}x{setup['height']} frames at {FPS:g} fps, depths {setup['depths']}, "
        f"LLM {setup['llm']}, {setup['dtype']}, {setup['repeats']} interleaved rounds after a warm-up"
    )
    if report.get("results"):
        print(
            "| model | frames | visual tokens | vision (s) | TTFT (s) | decode tok/s | peak MB | TTFT vs Mavors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in report["results"]:
            ratio = report["ratios"].get(f"{row['model']}/mavors@{row['frames']}", {}).get("ttft_s", 1.0)
            print(
                f"| {row['model']} | {row['frames']} | {row['visual_tokens']} | {row['vision_s']:.3f} | "
                f"{row['ttft_s']:.3f} | {row['decode_tokens_per_s']:.1f} | {row['peak_mem_mb']:.0f} | {ratio:.1f}x |"
            )
        print(
            "\n| frames | context | Mavors decode tok/s | bare Qwen2 decode tok/s | ratio (median per round) |"
        )
        print("|---|---|---|---|---|")
        for row in report["decode"]:
            print(
                f"| {row['frames']} | {row['context_tokens']} | {row['mavors_decode_tokens_per_s']:.2f} | "
                f"{row['bare_llm_decode_tokens_per_s']:.2f} | {row['ratio']:.3f} |"
            )
    if util := report.get("utilisation"):
        print(
            f"\nVision encoder, {util['chunks']} chunks of {util['grid'][0]}x{util['grid'][1]} patches: "
            f"{util['gflop_per_chunk']:.1f} GFLOP/chunk, {util['encoder_gflops']:.1f} GFLOP/s achieved, "
            f"torch.mm best {util['mm_best_gflops']:.1f} GFLOP/s -> {100 * util['fraction']:.1f}% "
            f"(best of {util['rounds']} rounds each; median per-round fraction "
            f"{100 * util.get('median_round_fraction', float('nan')):.1f}%)"
        )
        if util.get("onednn_best_gflops"):
            print(
                f"Against the best GEMM of torch.mm and oneDNN ({util['best_gemm_gflops']:.1f} GFLOP/s; oneDNN "
                f"best {util['onednn_best_gflops']:.1f}): {100 * util['fraction_of_best_gemm']:.1f}% (median "
                f"per-round fraction {100 * util['median_round_fraction_of_best_gemm']:.1f}%; fused CPU kernels "
                f"{'on' if util['fused_cpu_kernels'] else 'off'})"
            )
    if memory := report.get("memory"):
        print("\n| chunks | micro-batch | tokens | peak MB | IVE phase MB | kept MB | IVE beyond kept MB |")
        print("|---|---|---|---|---|---|---|")
        for row in memory["rows"]:
            print(
                f"| {row['chunks']} | {row['vision_chunk_batch_size']} | {row['visual_tokens']} | "
                f"{row['peak_mb']:.1f} | {row['ive_peak_mb']:.1f} | {row['kept_mb']:.1f} | "
                f"{row['ive_beyond_kept_mb']:.1f} |"
            )
        print(
            f"largest/smallest with micro-batching: peak {memory['ratio_peak']:.2f}x, "
            f"peak beyond the kept tokens {memory['ratio_peak_beyond_kept']:.2f}x, "
            f"IVE phase beyond the kept tokens {memory['ratio_ive_beyond_kept']:.2f}x"
        )


def plot(report: dict, path: Path) -> None:
    """Visual tokens, TTFT, peak memory and the prefill's activation memory against frames (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"mavors": "Mavors", "qwen2_5_vl": "Qwen2.5-VL", "video_llama_3": "VideoLLaMA3"}
    activation = {
        (row["model"], row["frames"]): row["prefill_transient_peak_mb"] for row in report.get("details", [])
    }
    panels = [
        ("visual_tokens", "visual tokens"),
        ("ttft_s", "time to first token (s)"),
        ("peak_mem_mb", "peak memory (MB): weights + inputs + prefill"),
        ("activation", "prefill activation peak (MB)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9))
    for axis, (key, title) in zip(axes, panels, strict=True):
        for model in MODELS:
            rows = sorted((r for r in report["results"] if r["model"] == model), key=lambda r: r["frames"])
            if key == "activation":
                rows = [dict(r, activation=activation.get((model, r["frames"]))) for r in rows]
                rows = [r for r in rows if r["activation"]]
            if rows:
                axis.plot(
                    [r["frames"] for r in rows], [r[key] for r in rows], marker="o", label=labels[model]
                )
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("frames")
        axis.set_title(title, fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    setup = report["setup"]
    fig.suptitle(
        f"{report['device']}, {setup['width']}x{setup['height']} frames, depths {setup['depths']}, "
        f"LLM {setup['llm']}, {setup['dtype']}, medians of {setup['repeats']} interleaved rounds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_memory(report: dict, path: Path) -> None:
    """Encoding memory against chunks: the whole peak, the part beyond the kept tokens, and the kept tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    memory = report["memory"]
    rows = [r for r in memory["rows"] if r["vision_chunk_batch_size"] == memory["micro_batch"]]
    chunks = [r["chunks"] for r in rows]
    fig, axis = plt.subplots(figsize=(6.4, 4.2))
    for key, label in (
        ("peak_mb", "peak"),
        ("beyond", "peak beyond the kept tokens"),
        ("kept_mb", "kept tokens (IVE output)"),
    ):
        values = [r["peak_mb"] - r["kept_mb"] if key == "beyond" else r[key] for r in rows]
        axis.plot(chunks, values, marker="o", label=f"{label}, micro-batch {memory['micro_batch']}")
    for r in memory["rows"]:
        if r["vision_chunk_batch_size"] != memory["micro_batch"]:
            axis.scatter([r["chunks"]], [r["peak_mb"]], marker="x", color="black", zorder=3)
            axis.annotate(
                f"no micro-batching: {r['peak_mb']:,.0f} MB",
                (r["chunks"], r["peak_mb"]),
                textcoords="offset points",
                xytext=(-150, -4),
                fontsize=8,
            )
    axis.set_yscale("log")
    axis.set_xlabel(f"chunks ({FRAMES_PER_CHUNK} frames each)")
    axis.set_ylabel("MB")
    axis.set_xticks(chunks)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    setup = report["setup"]
    axis.set_title(
        f"Mavors video encoding memory, {setup['width']}x{setup['height']}, {setup['dtype']}\n"
        f"{chunks[-1]} vs {chunks[0]} chunks: {memory['ratio_peak']:.2f}x in total, "
        f"{memory['ratio_peak_beyond_kept']:.2f}x beyond the kept tokens",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
