"""Long-video encoding memory: the peak of encoding one video against its length, with ViT micro-batching."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from transformers_mavors import num_visual_tokens

from .config import FRAMES_PER_CHUNK, Setup
from .inputs import mavors_inputs
from .measure import MemoryProbe, tensor_bytes
from .video import benchmark_frames


def run_memory(
    setup: Setup,
    mavors,
    device: torch.device,
    chunk_counts: list[int],
    micro_batch: int,
    contrast: bool = True,
) -> dict:
    """Peak transient memory of video encoding for videos of `chunk_counts` chunks, whole and IVE phase alone.

    `peak`: IVE + IFA + projector (`get_video_features`' work). `ive_peak`: the micro-batched ViT pass
    (`encode_chunks`, the window of that call in the same profiled run; on a GPU a run of its own), which is
    what the frames decoded cost; its result, the pooled tokens the IVE keeps, is `kept`, and
    `ive_beyond_kept` = ive_peak - kept. What the whole encode needs above the IVE phase is the IFA
    working over all kept tokens at once. Runs a one-layer copy of the benchmark's IVE (its IFA and projector
    unchanged): layers run one after another and free their activations under inference mode, so depth changes
    the time, not the peak. The micro-batched rows encode `micro_batch` chunks per ViT call; with `contrast`, a
    last row encodes the longest video in one call. Input pixels (held by the caller) are listed apart, not in
    the peaks. The longest video is preprocessed once and shorter ones are its first chunks. Allocation peaks are
    deterministic, so each is measured once.
    """
    from transformers_mavors import MavorsVisionConfig, MavorsVisionModel

    vision_config = mavors.config.vision_config.to_dict()
    vision_config["num_hidden_layers"] = 1
    vision = MavorsVisionModel(MavorsVisionConfig(**vision_config)).to(device, setup.torch_dtype).eval()
    projector = mavors.model.projector
    hidden = vision.config.hidden_size
    rows = []
    plan = [(count, micro_batch) for count in chunk_counts] + ([(max(chunk_counts),) * 2] if contrast else [])
    longest, _ = mavors_inputs(
        benchmark_frames(max(chunk_counts) * FRAMES_PER_CHUNK, setup.height, setup.width)
    )
    _, h, w = longest["video_grid_thw"][0].tolist()

    def peak_of(fn, *args) -> int:
        probe = MemoryProbe(device)
        with torch.inference_mode():
            probe.start()
            fn(*args)
            probe.stop()
        return probe.peak

    def encode(pixels, grid, positions):
        return projector(vision(pixels, grid, positions).last_hidden_state)

    encode_chunks = vision.encode_chunks

    def labelled_encode_chunks(*args, **kwargs):
        with torch.profiler.record_function("probe:ive"):
            return encode_chunks(*args, **kwargs)

    for count, batch in tqdm(plan, desc="Encoding memory", unit="video"):
        vision.config.vision_chunk_batch_size = batch
        pixels = longest["pixel_values_videos"][: count * h * w].to(device, setup.torch_dtype)
        grid = torch.tensor([[count, h, w]], device=device)
        positions = longest["video_chunk_positions"][:count].to(device)
        tokens = num_visual_tokens((count, h, w))
        if device.type == "cuda":  # CUDA's peak counter has no windows: run the IVE phase on its own
            peak = peak_of(encode, pixels, grid, positions)
            ive_peak = peak_of(encode_chunks, pixels.view(count, h * w, -1), h, w)
        else:  # one profiled run; the IVE phase is the window of its `encode_chunks` call
            vision.encode_chunks = labelled_encode_chunks
            probe = MemoryProbe(device)
            with torch.inference_mode():
                probe.start()
                encode(pixels, grid, positions)
                probe.stop()
            del vision.encode_chunks
            peak, ive_peak = probe.peak, probe.window_peak("ive")
        kept = tokens * hidden * torch.finfo(setup.torch_dtype).bits // 8
        rows.append(
            {
                "chunks": count,
                "vision_chunk_batch_size": batch,
                "visual_tokens": tokens,
                "input_pixels_mb": tensor_bytes([pixels]) / 2**20,
                "peak_mb": peak / 2**20,
                "ive_peak_mb": ive_peak / 2**20,
                "kept_mb": kept / 2**20,
                "ive_beyond_kept_mb": (ive_peak - kept) / 2**20,
            }
        )
    first, last = rows[0], rows[len(chunk_counts) - 1]
    return {
        "rows": rows,
        "micro_batch": micro_batch,
        "ratio_peak": last["peak_mb"] / first["peak_mb"],
        "ratio_peak_beyond_kept": (last["peak_mb"] - last["kept_mb"]) / (first["peak_mb"] - first["kept_mb"]),
        "ratio_ive_beyond_kept": last["ive_beyond_kept_mb"] / first["ive_beyond_kept_mb"],
    }
