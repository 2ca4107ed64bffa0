"""`mavors inspect`: the chunks, C-RoPE positions and tokens a video becomes, from its container header.

The plan is the video processor's own (`SamplingPlan.from_header`, what `MavorsVideoProcessor.plan_video` returns
for a file) with the processor's options: the defaults, or those a checkpoint saved (`--model`, a directory or a Hub
id whose JSON files alone are fetched), under `--fps` / `--max-chunks`. No frame is decoded and neither torch nor
transformers is imported, so the command answers in a fraction of a second (docs/preprocessing.md).
"""

from __future__ import annotations

import json
from typing import Any

from .checkpoint import check_checkpoint_dir, read_video_processor_dict
from .sampling import SamplingPlan, planning_options
from .video_header import VideoHeader


def inspect_options(
    model: str | None = None,
    revision: str | None = None,
    fps: float | None = None,
    max_chunks: int | None = None,
) -> dict[str, Any]:
    """The planning options `AutoProcessor.from_pretrained(model).video_processor` would use (the defaults without
    `model`), with `fps` / `max_chunks` over them when given. The checkpoint is checked first (`check_checkpoint_dir`
    without weights)."""
    stored = None
    if model:
        directory = check_checkpoint_dir(model, revision=revision, need_weights=False)
        stored = read_video_processor_dict(directory)
    return planning_options(stored, fps=fps, max_chunks=max_chunks)


def plan_video_file(video: Any, options: dict[str, Any]) -> SamplingPlan:
    """The plan of one video file (path, file object or bytes) from its container header."""
    with VideoHeader(video, max_pixels=options["max_image_pixels"]) as header:
        return SamplingPlan.from_header(header, options)


def plan_report(video: str, plan: SamplingPlan, spatial_merge_size: int) -> dict[str, Any]:
    """The plan as `mavors inspect --json` prints it."""
    meta, grid = plan.metadata, plan.grid_thw
    per_chunk = plan.num_tokens_per_chunk(spatial_merge_size)
    return {
        "video": video,
        "duration_s": round(meta.duration, 3),
        "fps": meta.fps,
        "playback_speed": meta.playback_speed,
        "frames_kept": meta.num_frames,
        "frame_size": [meta.resized_width, meta.resized_height],
        "chunks": grid[0],
        "tokens_per_chunk": per_chunk,
        "total_tokens": per_chunk * grid[0],
        "chunk_table": [
            {"chunk": i, "position": position, "start_s": round(start, 3), "end_s": round(end, 3)}
            for i, (position, (start, end)) in enumerate(
                zip(meta.chunk_positions, meta.chunk_timestamps, strict=True)
            )
        ],
    }


def print_report(report: dict[str, Any], plan: SamplingPlan) -> None:
    """The plan as a table, the way `mavors inspect` prints it without `--json`."""
    meta = plan.metadata
    print(f"{report['video']}: {report['duration_s']} s, sampled at {meta.fps:g} fps", end="")
    print(f" (played {meta.playback_speed:.2f}x faster to fit)" if meta.playback_speed > 1 else "")
    print(f"frames kept {meta.num_frames}, resized to {meta.resized_width}x{meta.resized_height}")
    print(
        f"{report['chunks']} chunks x {report['tokens_per_chunk']} tokens = {report['total_tokens']} visual tokens"
    )
    print(f"{'chunk':>5}  {'position':>8}  {'start s':>8}  {'end s':>8}")
    for row in report["chunk_table"]:
        print(f"{row['chunk']:>5}  {row['position']:>8}  {row['start_s']:>8.2f}  {row['end_s']:>8.2f}")


def run_inspect(args) -> int:
    """`mavors inspect VIDEO [--model DIR_OR_HUB_ID] [--revision R] [--fps F] [--max-chunks N] [--json]`."""
    options = inspect_options(
        args.model,
        getattr(args, "revision", None),
        getattr(args, "fps", None),
        getattr(args, "max_chunks", None),
    )
    plan = plan_video_file(args.video, options)
    report = plan_report(args.video, plan, options["spatial_merge_size"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, plan)
    return 0


__all__ = ["inspect_options", "plan_report", "plan_video_file", "print_report", "run_inspect"]
