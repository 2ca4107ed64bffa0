"""The peer benchmark (`benchmarks/peers.py`, the package `benchmarks/peers/`) and the decode-cost claim it measures.

Decode: after the prefill, a Mavors generation step must cost exactly what a bare `Qwen2ForCausalLM` step costs at
the same context: nothing vision-related may run per step. Proved here without timing (timings are noisy): spies
on every vision module, and FLOP counts of decode steps.
"""

import importlib
import importlib.util
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import prompt_ids, tokens_for, video_inputs
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen2Config, Qwen2ForCausalLM

from transformers_mavors import MavorsVisionModel

ROOT = Path(__file__).resolve().parents[1]


def video_prompt(config, tokenizer, num_chunks=3):
    rows, grid = video_inputs(num_chunks, 4, 6)
    ids = prompt_ids(config, tokenizer, "What moves?", config.video_token_id, tokens_for(grid), "Answer:")
    return torch.tensor([ids]), rows, grid, torch.arange(num_chunks) * 2


ENTRY_POINT = ROOT / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    """The benchmark's package, found the way its entry point finds it (which puts `benchmarks/` on the path)."""
    runpy.run_path(str(ENTRY_POINT))  # not as __main__: imports, runs nothing
    return importlib.import_module("peers")


# ---- decode: nothing vision-related per step ----------------------------------------------------


def test_vision_runs_only_in_prefill(model, config, tokenizer):
    """Every vision module runs before the first language-model call, never during the decode steps."""
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    events = []
    vision = model.model.vision_model
    watched = {
        "patch_embedding": vision.embeddings,
        "vit": vision.encoder,
        "post_layernorm": vision.post_layernorm,
        "aggregator": vision.aggregator,
        "projector": model.model.projector,
        "language_model": model.model.language_model,
    }
    handles = [
        module.register_forward_hook(lambda *args, name=name: events.append(name))
        for name, module in watched.items()
    ]
    step_inputs = []
    handles.append(
        model.register_forward_pre_hook(
            lambda module, args, kwargs: step_inputs.append(
                {k: kwargs.get(k) for k in ("pixel_values_videos", "mm_encoder_outputs")}
            ),
            with_kwargs=True,
        )
    )
    try:
        model.generate(
            input_ids=ids,
            pixel_values_videos=rows,
            video_grid_thw=grid,
            video_chunk_positions=positions,
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
        )
    finally:
        for handle in handles:
            handle.remove()
    first_llm_call = events.index("language_model")
    assert events.count("language_model") == 6  # prefill + 5 decode steps
    assert set(events[:first_llm_call]) == set(watched) - {"language_model"}
    assert set(events[first_llm_call:]) == {"language_model"}
    assert len(step_inputs) == 6
    for decode_step in step_inputs[1:]:
        assert decode_step["pixel_values_videos"] is None and not decode_step["mm_encoder_outputs"]


def test_decode_steps_cost_what_bare_qwen2_costs(model, config, tokenizer):
    """FLOPs of 5 decode steps equal those of a bare Qwen2ForCausalLM (same weights) at the same context length."""
    ids, rows, grid, positions = video_prompt(config, tokenizer)
    bare = Qwen2ForCausalLM(Qwen2Config(**config.text_config.to_dict())).eval()
    bare.model = model.model.language_model
    bare.lm_head = model.lm_head
    text_ids = torch.randint(0, 100, ids.shape)

    def flops(generating_model, new_tokens, **inputs):
        with FlopCounterMode(display=False) as counter:
            generating_model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        return counter.get_total_flops()

    media = dict(
        input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid, video_chunk_positions=positions
    )
    ours = flops(model, 6, **media) - flops(model, 1, **media)
    theirs = flops(bare, 6, input_ids=text_ids) - flops(bare, 1, input_ids=text_ids)
    assert ours == theirs > 0


# ---- the benchmark script -----------------------------------------------------------------------


def test_benchmark_frames_are_a_deterministic_moving_scene(peers):
    frames = peers.video.benchmark_frames(8, 56, 84, seed=3)
    assert frames.shape == (8, 56, 84, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, peers.video.benchmark_frames(8, 56, 84, seed=3))
    change = np.abs(frames[1:].astype(int) - frames[:-1].astype(int)).max(axis=-1)
    moving = (change > 40).mean()  # the shapes move ...
    assert 0.0 < moving < 0.5  # ... over a background that only carries noise


def test_vision_flop_count_matches_torch_flop_counter(peers, vision_config):
    """`vision_flops` (the utilisation numerator) counts what torch's FLOP counter sees the IVE run."""
    vision_config.ifa_num_hidden_layers = 0
    vision_config._attn_implementation = "eager"  # attention as plain matmuls, which the counter sees
    vision_config.fused_cpu_kernels = False  # the counter knows aten's GEMMs, not oneDNN's fused op
    tower = MavorsVisionModel(vision_config).eval()
    rows, grid = video_inputs(3, 4, 6)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tower(rows, grid)
    counted = peers.utilisation.vision_flops(tower.config, 3, 4, 6)
    assert counted["patch_embedding"] + counted["vit_layers"] == counter.get_total_flops()


def test_memory_probe_measures_the_peak_of_live_bytes(peers):
    """The probe behind every memory number: frees count, the peak is of live bytes, a window is above its start."""
    probe = peers.measure.MemoryProbe(torch.device("cpu"))
    probe.start()
    kept = torch.ones(1 << 16)  # 256 KiB, live throughout
    with torch.profiler.record_function("probe:block"):
        transient = torch.ones(1 << 20)  # 4 MiB, freed inside the block
        del transient
    after = torch.ones(1 << 18)  # 1 MiB, allocated once the 4 MiB are gone
    probe.stop()
    assert probe.peak == kept.nbytes + 4 * 2**20 > kept.nbytes + after.nbytes
    assert probe.window_peak("block") == 4 * 2**20


@pytest.mark.parametrize("fused", ["on", "off"])
def test_peers_tiny_run_writes_the_json_schema(peers, tmp_path, monkeypatch, fused):
    """`python benchmarks/peers.py --tiny --json ...` (the entry point, run as a script) writes the report."""
    report_path, plot_path = tmp_path / "peers.json", tmp_path / "peers.png"
    memory_plot_path = tmp_path / "memory.png"
    argv = ["--tiny", "--json", str(report_path), "--fused-cpu-kernels", fused]
    if importlib.util.find_spec("matplotlib") is not None:
        argv += ["--plot", str(plot_path), "--memory-plot", str(memory_plot_path)]
    monkeypatch.setattr(sys, "argv", [str(ENTRY_POINT), *argv])
    runpy.run_path(str(ENTRY_POINT), run_name="__main__")
    report = json.loads(report_path.read_text())
    assert isinstance(report["device"], str)
    schema = {
        "model": str,
        "frames": int,
        "visual_tokens": int,
        "vision_s": float,
        "ttft_s": float,
        "decode_tokens_per_s": float,
        "peak_mem_mb": float,
    }
    assert {(row["model"], row["frames"]) for row in report["results"]} == {
        (model, frames) for model in ("mavors", "qwen2_5_vl", "video_llama_3") for frames in (8, 16)
    }
    for row in report["results"]:
        assert set(row) == set(schema)
        for key, kind in schema.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["ttft_s"] >= row["vision_s"] > 0 and row["peak_mem_mb"] > 0
    tokens = {(r["model"], r["frames"]): r["visual_tokens"] for r in report["results"]}
    # 56x28 frames: a 2x4 patch grid, 2 tokens per chunk (Mavors) / per 2 frames (Qwen2.5-VL) / per frame
    assert tokens["mavors", 16] == 2 and tokens["qwen2_5_vl", 16] == 16 and tokens["video_llama_3", 16] == 32
    assert 0 < report["utilisation"]["fraction"]
    memory = report["memory"]
    rows = memory["rows"]
    # --tiny: 1, 2 and 4 chunks encoded one chunk per ViT call, then the 4 chunks in a single call
    assert [(r["chunks"], r["vision_chunk_batch_size"]) for r in rows] == [(1, 1), (2, 1), (4, 1), (4, 4)]
    for row in rows:
        assert row["peak_mb"] >= row["ive_peak_mb"] >= row["kept_mb"] > 0
    beyond_kept = [row["peak_mb"] - row["kept_mb"] for row in rows]
    # the printed ratio is of the rows the table shows: the longest micro-batched video over the shortest
    assert memory["ratio_peak_beyond_kept"] == pytest.approx(beyond_kept[2] / beyond_kept[0])
    # the claim (docs/performance.md): micro-batched, memory beyond the kept tokens stays flat as the video grows
    # (target: 1.5x) ...
    assert max(beyond_kept[:3]) <= 1.5 * beyond_kept[0]
    # ... while one ViT call over all 4 chunks needs well over twice what 4 calls of one chunk need (at these
    # widths only without the fused kernels: oneDNN's fixed 0.5 MB GEMM scratchpad outweighs the activations)
    assert report["setup"]["fused_cpu_kernels"] is (fused == "on")
    assert report["utilisation"]["fused_cpu_kernels"] is (fused == "on")
    if fused == "off":
        assert rows[3]["ive_peak_mb"] > 2 * rows[2]["ive_peak_mb"]
    if "--plot" in argv:
        assert plot_path.stat().st_size > 0 and memory_plot_path.stat().st_size > 0


def test_vision_kernels_tiny_run_reports_profile_and_levers(tmp_path):
    """`benchmarks/vision_kernels.py --tiny`: the profile groups add up, every lever ran and kept the numbers."""
    sys.path.insert(0, str(ENTRY_POINT.parent))
    try:
        module = runpy.run_path(str(ENTRY_POINT.parent / "vision_kernels.py"))
    finally:
        sys.path.remove(str(ENTRY_POINT.parent))
    report = module["main"](["--tiny", "--rounds", "3", "--json", str(tmp_path / "vk.json")])
    assert json.loads((tmp_path / "vk.json").read_text())["levers"]["rounds"] == 3
    for name in ("vit_micro_batch_unfused", "vit_micro_batch_fused", "ifa_unfused", "ifa_fused"):
        part = report["profile"][name]
        assert part["total_s"] > 0 and sum(part["share"].values()) == pytest.approx(1.0)
    assert "bias copies" in report["profile"]["vit_micro_batch_unfused"]["share"]  # nn.Linear's bias copy
    levers = {row["lever"]: row for row in report["levers"]["levers"]}
    assert levers["transformers modules (baseline)"]["speedup"] == 1.0
    scale = report["levers"]["output_max_abs"]
    assert scale > 0.1
    for name in ("oneDNN GEMMs, epilogues unfused", "oneDNN GEMMs + fused bias/GELU/residual (shipped)"):
        assert levers[name]["max_abs_diff_vs_baseline"] <= 1e-5 * max(1.0, scale)
        assert len(levers[name]["round_s"]) == 3 and levers[name]["speedup"] > 0
