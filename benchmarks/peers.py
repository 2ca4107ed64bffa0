"""Mavors against transformers' own Qwen2.5-VL and VideoLLaMA3 on one generated video, in one run.

Every model is its real architecture (transformers' `Qwen2_5_VLForConditionalGeneration`,
`VideoLlama3ForConditionalGeneration`, our `MavorsForConditionalGeneration`) with random weights, behind the same
language model (one Qwen2 text config), fed the same frames (`benchmark_frames`) at the same frame rate and the
same pixels per frame, each through its own input conventions:

- **Mavors**: `MavorsVideoProcessor` (16-frame chunks, one 3D-conv ViT pass per chunk, 2x2 average pooling ->
  h*w/4 tokens per chunk). Its R_v is set to sqrt(W*H) so dynamic resolution keeps the frames at W x H.
- **Qwen2.5-VL**: its video processor's patch layout (temporal patch 2, 2x2 merge -> h*w/4 tokens per 2 frames),
  reimplemented here because its processor needs torchvision, which this environment lacks.
- **VideoLLaMA3**: its video processor's layout (per-frame patches, 2x2 bilinear downsampling -> h*w/4 tokens
  per frame) and its prompt, which puts "Time t.ts:" before each frame's tokens. Its processor would also shrink
  frames to fit ~768 tokens per video and prune similar tokens; both are off so every model sees equal pixels
  (see docs/performance.md).

Sizes: on a GPU, full size (Mavors-7B's SigLIP-so400m + 3 IFA layers, Qwen2.5-VL-7B's 32-block ViT, VideoLLaMA3's
SigLIP-so400m, all behind Qwen2.5-7B) in bf16. On a CPU the widths are kept and every stack's depth is divided by
`--depth-divisor` (8), and the shared LLM is Qwen2.5-0.5B's widths (a 7B-wide LLM alone makes one VideoLLaMA3
prefill at 64 frames ~17 TFLOP, minutes on 2 cores); fp32. `--llm 7b` restores the 7B LLM anywhere.

Measured per model and frame count, medians of `--repeats` interleaved rounds after a warm-up: visual tokens,
vision-encoder time (`get_video_features`, projector included), time to first token (`generate`, vision + prefill),
decode tokens/s at that context, peak memory (parameters + inputs + the transient peak of the prefill: CPU from
the profiler's allocation events, GPU from `max_memory_allocated`). Ratios against Mavors are medians of per-round
ratios. The same rounds time the bare `Qwen2ForCausalLM` (Mavors' own LLM weights) at Mavors' context, for the
decode comparison. Two more sections: the vision encoder's FLOP utilisation against `torch.mm` on its own GEMM
shapes, measured in the same run, and peak encoding memory for 8, 32 and 60 chunks with micro-batching.

    python benchmarks/peers.py --quick --json quick.json --plot docs/peers_quick.png   # < 2 min, 2 CPU cores
    python benchmarks/peers.py --json full.json --plot docs/peers_full.png             # 16, 64, 256 frames
    python benchmarks/peers.py --frames 16 64 256 960 --sections peers                 # on a GPU
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    VideoLlama3Config,
    VideoLlama3ForConditionalGeneration,
)
from transformers.utils import logging

from transformers_mavors import (
    MavorsConfig,
    MavorsForConditionalGeneration,
    MavorsVideoProcessor,
    num_visual_tokens,
)
from transformers_mavors.configuration_mavors import QWEN2_5_7B_TEXT_DEFAULTS

logger = logging.get_logger("transformers_mavors.benchmarks.peers")

MODELS = ("mavors", "qwen2_5_vl", "video_llama_3")
FPS = 2.0  # frame rate of the benchmark video, given to every model
FRAMES_PER_CHUNK = 16  # Mavors' F

# Qwen2.5 special tokens (ids of the real vocabulary, which every config below keeps)
IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = (
    151644,
    151645,
    151652,
    151653,
    151655,
    151656,
)
QWEN2_5_0_5B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "tie_word_embeddings": True,
}
TINY_TEXT = {
    **QWEN2_5_0_5B_TEXT,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}
LLMS = {"0.5b": QWEN2_5_0_5B_TEXT, "7b": QWEN2_5_7B_TEXT_DEFAULTS, "tiny": TINY_TEXT}
# SigLIP-so400m-patch14-384: the IVE of Mavors-7B and the ViT VideoLLaMA3 starts from
SIGLIP_SO400M = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
}
# Qwen2.5-VL-7B's ViT (its config.json; the class defaults in transformers differ)
QWEN2_5_VL_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "hidden_act": "silu",
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "tokens_per_second": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
# Normalisation constants of each processor (OpenAI CLIP for Qwen, 0.5/0.5 for SigLIP-based ones)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


# ------------------------------------------------------------------------------------------------
# The benchmark video
# ------------------------------------------------------------------------------------------------


def benchmark_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames `(T, H, W, 3)` uint8: three shapes moving over a static textured background, plus mild noise.

    The background (smooth colour gradients and a fixed random texture) never moves; a red square, a green disc
    and a blue bar move at different constant speeds and bounce off the borders; every frame gets independent
    Gaussian noise (sigma 3). Deterministic for a given `seed`.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack(
        [
            96 + 60 * np.sin(xx / max(width, 1) * 2 * np.pi),
            96 + 60 * np.cos(yy / max(height, 1) * 3 * np.pi),
            96 + 40 * np.sin((xx + yy) / max(width + height, 1) * 4 * np.pi),
        ],
        axis=-1,
    )
    background += rng.normal(0.0, 12.0, size=background.shape)  # fixed texture
    side = max(2, min(height, width) // 5)
    shapes = [  # (colour, kind, start x, start y, velocity x, velocity y), positions in pixels, speeds per frame
        ((220, 40, 40), "square", 0.1 * width, 0.2 * height, 0.013 * width, 0.009 * height),
        ((40, 200, 60), "disc", 0.7 * width, 0.6 * height, -0.008 * width, 0.015 * height),
        ((50, 70, 230), "bar", 0.4 * width, 0.1 * height, 0.005 * width, -0.011 * height),
    ]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        for colour, kind, x0, y0, vx, vy in shapes:
            x = _bounce(x0 + vx * t, width - side)
            y = _bounce(y0 + vy * t, height - side)
            if kind == "square":
                mask = (xx >= x) & (xx < x + side) & (yy >= y) & (yy < y + side)
            elif kind == "disc":
                mask = (xx - x - side / 2) ** 2 + (yy - y - side / 2) ** 2 < (side / 2) ** 2
            else:
                mask = (xx >= x) & (xx < x + 2 * side) & (yy >= y) & (yy < y + side / 3)
            frame[mask] = colour
        frame += rng.normal(0.0, 3.0, size=frame.shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def _bounce(position: float, limit: float) -> float:
    """Reflect a coordinate moving on a line into `[0, limit]`."""
    if limit <= 0:
        return 0.0
    period = position % (2 * limit)
    return period if period <= limit else 2 * limit - period


# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """Everything that defines one benchmark run; written to the JSON."""

    device: str
    dtype: str
    llm: str
    depth_divisor: int
    width: int
    height: int
    frames: list[int]
    repeats: int
    decode_tokens: int
    tiny: bool = False
    video_llama_3_all_logits: bool = False
    depths: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def reduced(full_depth: int, divisor: int) -> int:
    """A stack of `full_depth` layers cut to 1/`divisor` (rounded half up), at least one layer."""
    return max(1, int(full_depth / divisor + 0.5))


def text_config(setup: Setup) -> dict:
    """The one Qwen2 text config every model gets (depth reduced)."""
    config = dict(LLMS[setup.llm])
    config["num_hidden_layers"] = reduced(config["num_hidden_layers"], setup.depth_divisor)
    setup.depths["llm"] = config["num_hidden_layers"]
    return config


def build_mavors(setup: Setup, text: dict) -> MavorsForConditionalGeneration:
    vision = dict(TINY_VISION if setup.tiny else SIGLIP_SO400M)
    vision["num_hidden_layers"] = reduced(vision["num_hidden_layers"], setup.depth_divisor)
    ifa_layers = 1 if setup.tiny else reduced(3, setup.depth_divisor)
    setup.depths["mavors_vit"], setup.depths["mavors_ifa"] = vision["num_hidden_layers"], ifa_layers
    config = MavorsConfig(
        vision_config=dict(
            **vision,
            image_size=56 if setup.tiny else 384,
            patch_size=14,
            frames_per_chunk=FRAMES_PER_CHUNK,
            ifa_num_hidden_layers=ifa_layers,
            ifa_num_attention_heads=vision["num_attention_heads"],
            ifa_intermediate_size=vision["intermediate_size"],
        ),
        text_config=dict(model_type="qwen2", **text),
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
    )
    return MavorsForConditionalGeneration(config)


def build_qwen2_5_vl(setup: Setup, text: dict) -> Qwen2_5_VLForConditionalGeneration:
    vision = dict(QWEN2_5_VL_VISION)
    if setup.tiny:
        vision.update(hidden_size=32, intermediate_size=64, num_heads=2, depth=1)
    depth = reduced(vision["depth"], setup.depth_divisor) if not setup.tiny else 1
    # the full tower has window attention everywhere but the last block of each group of 8; a tower cut to fewer
    # blocks than 8 keeps one full-attention block, its last
    group = 8 if depth >= 8 else depth
    vision["depth"] = depth
    vision["fullatt_block_indexes"] = [i for i in range(depth) if (i + 1) % group == 0]
    vision["out_hidden_size"] = text["hidden_size"]
    setup.depths["qwen2_5_vl_vit"] = depth
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    # M-RoPE splits head_dim/2 rotary frequencies 2:3:3 over (time, height, width), as [16, 24, 24] does at 128
    quarter = head_dim // 8
    mrope = [
        quarter,
        (head_dim // 2 - quarter) // 2,
        head_dim // 2 - quarter - (head_dim // 2 - quarter) // 2,
    ]
    text_kwargs = {k: v for k, v in text.items() if k != "rope_parameters"}
    text_kwargs["rope_parameters"] = {**text["rope_parameters"], "mrope_section": mrope}
    config = Qwen2_5_VLConfig(
        text_config=text_kwargs,
        vision_config=vision,
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=text["tie_word_embeddings"],
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def build_video_llama_3(setup: Setup, text: dict) -> VideoLlama3ForConditionalGeneration:
    vision = dict(TINY_VISION if setup.tiny else SIGLIP_SO400M)
    vision["num_hidden_layers"] = reduced(vision["num_hidden_layers"], setup.depth_divisor)
    setup.depths["video_llama_3_vit"] = vision["num_hidden_layers"]
    config = VideoLlama3Config(
        text_config=dict(model_type="qwen2", **text),
        vision_config=dict(**vision, patch_size=14),
        image_token_id=IMAGE_PAD,
        video_token_id=VIDEO_PAD,
    )
    return VideoLlama3ForConditionalGeneration(config)


class LastPositionHead(torch.nn.Module):
    """An LM head applied to the last position only (what `logits_to_keep=1` does in the other two models).

    transformers' VideoLLaMA3 has no `logits_to_keep`: its prefill projects every prompt position onto the
    vocabulary (~5.6 GB of fp32 logits at 64 frames of 448x252). Generation reads the last position only, so
    this changes no generated token, and the comparison is of architectures, not of that omission.
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.head(hidden_states[:, -1:])


def randomize_(model: torch.nn.Module, generator: torch.Generator, done: set) -> None:
    """Random weights, fast: norm weights 1, other vectors 0, matrices N(0, 0.02). Tensors in `done` are skipped."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.data_ptr() in done:
                continue
            done.add(param.data_ptr())
            if param.ndim > 1:
                param.normal_(0.0, 0.02, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def build_models(setup: Setup) -> dict:
    """The three models behind one shared language model: the same Qwen2 weights (and LM head) in each.

    Built without transformers' weight initialisation (three copies of it take longer than the quick benchmark
    may) and filled by `randomize_`; Qwen2.5-VL's text model (Qwen2 layers with M-RoPE) takes the shared tensors
    by `load_state_dict(assign=True)`, VideoLLaMA3 holds the very module.
    """
    from transformers.initialization import no_init_weights

    text = text_config(setup)
    with no_init_weights():
        models = {
            "mavors": build_mavors(setup, text),
            "qwen2_5_vl": build_qwen2_5_vl(setup, text),
            "video_llama_3": build_video_llama_3(setup, text),
        }
    mavors = models["mavors"]
    if text["tie_word_embeddings"]:
        mavors.lm_head.weight = mavors.model.language_model.embed_tokens.weight
    models["video_llama_3"].model.language_model = mavors.model.language_model
    models["video_llama_3"].lm_head = (
        mavors.lm_head if setup.video_llama_3_all_logits else LastPositionHead(mavors.lm_head)
    )
    models["qwen2_5_vl"].model.language_model.load_state_dict(
        mavors.model.language_model.state_dict(), strict=True, assign=True
    )
    models["qwen2_5_vl"].lm_head = mavors.lm_head
    generator, done = torch.Generator().manual_seed(0), set()
    for model in models.values():
        randomize_(model, generator, done)
    return {name: model.to(setup.device, setup.torch_dtype).eval() for name, model in models.items()}


def build_bare_llm(mavors: MavorsForConditionalGeneration) -> Qwen2ForCausalLM:
    """`Qwen2ForCausalLM` holding Mavors' own language model and LM head (shared, not copied)."""
    with torch.device("meta"):
        bare = Qwen2ForCausalLM(Qwen2Config(**mavors.config.text_config.to_dict()))
    bare.model = mavors.model.language_model
    bare.lm_head = mavors.lm_head
    return bare


# ------------------------------------------------------------------------------------------------
# Inputs, each model's way
# ------------------------------------------------------------------------------------------------

# ChatML around the video: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" and
# "Describe what happens in the video.<|im_end|>\n<|im_start|>assistant\n"; stand-in ids of the same lengths.
_TEXT = np.random.default_rng(1234).integers(1000, 150000, size=64).tolist()
PROMPT_BEFORE = [IM_START, *_TEXT[:4], IM_END, _TEXT[4], IM_START, *_TEXT[5:7]]
PROMPT_AFTER = [*_TEXT[10:17], IM_END, _TEXT[17], IM_START, *_TEXT[18:20]]


def _prompt(vision_ids: list[int]) -> dict:
    ids = torch.tensor([PROMPT_BEFORE + [VISION_START] + vision_ids + [VISION_END] + PROMPT_AFTER])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _normalised(frames: np.ndarray, mean, std) -> torch.Tensor:
    """`(T, H, W, 3)` uint8 -> `(1, T, 3, H, W)` float, rescaled to [0, 1] and normalised."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255)
    video = (video - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return video[None]


def patchify(video: torch.Tensor, temporal_patch: int, patch: int = 14, merge: int = 2):
    """The Qwen2-VL / VideoLLaMA3 video processors' `patchify`: `(1, T, C, H, W)` -> rows, `(t, h, w)` grid.

    Rows are ordered by temporal patch, then 2x2 merge block, then position inside the block; each holds
    `(C, temporal_patch, p, p)` values. A frame count not divisible by `temporal_patch` repeats the last frame.
    """
    batch, frames, channels, height, width = video.shape
    if pad := -frames % temporal_patch:
        video = torch.cat((video, video[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
        frames += pad
    grid_t, grid_h, grid_w = frames // temporal_patch, height // patch, width // patch
    patches = video.view(
        batch, grid_t, temporal_patch, channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch
    ).permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    rows = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch * patch * patch)
    return rows, torch.tensor([[grid_t, grid_h, grid_w]])


def mavors_inputs(frames: np.ndarray) -> tuple[dict, int]:
    """`MavorsVideoProcessor` at R_v = sqrt(W*H) (frames keep their size) + the placeholder expansion."""
    _, height, width, _ = frames.shape
    processor = MavorsVideoProcessor(
        fps=FPS,
        frames_per_chunk=FRAMES_PER_CHUNK,
        max_chunks=math.ceil(len(frames) / FRAMES_PER_CHUNK),
        image_size=round(math.sqrt(width * height)),
        patch_size=14,
    )
    video = processor(frames, return_tensors="pt")
    grid = video["video_grid_thw"][0].tolist()
    if (grid[1] * 14, grid[2] * 14) != (height, width):
        raise ValueError(
            f"Mavors' processor resized {width}x{height} frames to {grid[2] * 14}x{grid[1] * 14}"
        )
    tokens = num_visual_tokens(grid)
    return {**_prompt([VIDEO_PAD] * tokens), **video}, tokens


def qwen2_5_vl_inputs(frames: np.ndarray) -> tuple[dict, int]:
    """Qwen2.5-VL's layout: temporal patch 2, CLIP normalisation, tokens = t*h*w/4, M-RoPE metadata."""
    rows, grid = patchify(_normalised(frames, CLIP_MEAN, CLIP_STD), temporal_patch=2)
    tokens = int(grid.prod()) // 4
    inputs = _prompt([VIDEO_PAD] * tokens)
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == VIDEO_PAD).int() * 2  # 0 text, 2 video
    inputs.update(pixel_values_videos=rows, video_grid_thw=grid, second_per_grid_ts=torch.tensor([2 / FPS]))
    return inputs, tokens


def video_llama_3_timestamp_tokens(seconds: float) -> int:
    """Tokens Qwen2.5's tokenizer makes of VideoLLaMA3's per-frame prefix `f"Time {t:.1f}s:"`.

    "Time", " ", one token per digit, ".", the tenths digit, "s", ":" (Qwen2's pre-tokenizer splits digits).
    """
    return 6 + len(str(int(seconds)))


def video_llama_3_inputs(frames: np.ndarray) -> tuple[dict, int]:
    """VideoLLaMA3's layout: per-frame patches (temporal patch 1), merge size 2 for video, 0.5/0.5 normalisation,
    h*w/4 tokens per frame, each frame's tokens after "Time t.ts:" and frames joined by ",". No token pruning."""
    rows, grid = patchify(_normalised(frames, HALF, HALF), temporal_patch=1)
    per_frame = int(grid[0, 1] * grid[0, 2]) // 4
    text_token = _TEXT[30]
    vision_ids: list[int] = []
    for index in range(len(frames)):
        if index:
            vision_ids.append(text_token)  # ","
        vision_ids += [text_token] * video_llama_3_timestamp_tokens(index / FPS) + [VIDEO_PAD] * per_frame
    inputs = _prompt(vision_ids)
    inputs.update(
        pixel_values_videos=rows,
        video_grid_thw=grid,
        video_merge_sizes=torch.tensor([2]),
        video_compression_mask=torch.ones(per_frame * len(frames), dtype=torch.bool),
    )
    return inputs, per_frame * len(frames)


INPUT_BUILDERS = {
    "mavors": mavors_inputs,
    "qwen2_5_vl": qwen2_5_vl_inputs,
    "video_llama_3": video_llama_3_inputs,
}


# ------------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------------


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


def _tensor_bytes(tensors) -> int:
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
            if device.type == "cuda":
                torch.cuda.synchronize()
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
        if device.type == "cuda":
            torch.cuda.synchronize()
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


def run_peers(setup: Setup, models: dict, bare_llm, device: torch.device) -> dict:
    """The side-by-side table: every model at every frame count, rounds interleaved across models."""
    results, details, decode, ratios = [], [], [], {}
    param_bytes = {
        name: _tensor_bytes(model.parameters()) for name, model in models.items()
    }  # shared LLM in each
    new_tokens = 1 + setup.decode_tokens
    for num_frames in setup.frames:
        frames = benchmark_frames(num_frames, setup.height, setup.width)
        inputs, tokens = {}, {}
        for name in models:
            built, tokens[name] = INPUT_BUILDERS[name](frames)
            inputs[name] = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in built.items()}
        input_bytes = {name: _tensor_bytes(inputs[name].values()) for name in models}
        context = inputs["mavors"]["input_ids"].shape[1]
        bare_ids = torch.randint(1000, 150000, (1, context), generator=torch.Generator().manual_seed(0))
        inputs["bare_llm"] = {
            "input_ids": bare_ids.to(device),
            "attention_mask": torch.ones_like(bare_ids).to(device),
        }
        runners = {**models, "bare_llm": bare_llm}
        runs: dict[str, list[dict]] = {name: [] for name in runners}
        skipped = set()
        warm_up = num_frames == setup.frames[0]  # one warm-up round per model, before the first frame count
        steps = tqdm(
            total=len(runners) * (setup.repeats + warm_up),
            desc=f"{num_frames} frames",
            unit="run",
            mininterval=1,
        )
        for round_index in range(setup.repeats + warm_up):
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
        mavors_runs, bare_runs = runs["mavors"], runs["bare_llm"]
        decode.append(
            {
                "frames": num_frames,
                "context_tokens": context,
                "mavors_decode_tokens_per_s": statistics.median(
                    r["decode_tokens_per_s"] for r in mavors_runs
                ),
                "bare_llm_decode_tokens_per_s": statistics.median(
                    r["decode_tokens_per_s"] for r in bare_runs
                ),
                "ratio": statistics.median(
                    m["decode_tokens_per_s"] / b["decode_tokens_per_s"]
                    for m, b in zip(mavors_runs, bare_runs, strict=True)
                ),
            }
        )
    return {"results": results, "ratios": ratios, "decode": decode, "details": details}


# ------------------------------------------------------------------------------------------------
# Vision-encoder utilisation
# ------------------------------------------------------------------------------------------------


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
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            torch.mm(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize()
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
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            vision(pixels, grid)
            if device.type == "cuda":
                torch.cuda.synchronize()
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


# ------------------------------------------------------------------------------------------------
# Long-video encoding memory
# ------------------------------------------------------------------------------------------------


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
                "input_pixels_mb": _tensor_bytes([pixels]) / 2**20,
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


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="16 and 64 frames at 224x140, 3 rounds: < 2 min on 2 cores"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny widths, for tests (seconds)")
    parser.add_argument("--frames", type=int, nargs="+", help="frame counts (default 16 64 256)")
    parser.add_argument("--size", help="frame size WxH (default 448x252; --quick 224x140)")
    parser.add_argument("--repeats", type=int, help="timed rounds after the warm-up (default 3, at least 3)")
    parser.add_argument(
        "--decode-tokens", type=int, help="tokens decoded after the first (default 32; quick 5)"
    )
    parser.add_argument(
        "--llm", choices=sorted(LLMS), help="shared LLM widths (default: 7b on GPU, 0.5b on CPU)"
    )
    parser.add_argument(
        "--depth-divisor", type=int, help="divide every stack's depth by this (default: 1 GPU, 8 CPU)"
    )
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], help="default: bfloat16 on GPU, float32 on CPU"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=["peers", "utilisation", "memory"],
        default=["peers", "utilisation", "memory"],
    )
    parser.add_argument("--memory-chunks", type=int, nargs="+", help="chunk counts (default 8 32 60)")
    parser.add_argument(
        "--memory-micro-batch", type=int, default=8, help="vision_chunk_batch_size of the memory rows"
    )
    parser.add_argument(
        "--utilisation-chunks", type=int, help="chunks in the utilisation video (default 16; quick 4)"
    )
    parser.add_argument(
        "--video-llama-3-all-logits", action="store_true", help="keep VideoLLaMA3's all-position logits"
    )
    parser.add_argument(
        "--threads",
        default="auto",
        help="CPU threads for every model: a number, or auto (the faster of 1 and all)",
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--from-json", type=Path, help="print and plot a saved report instead of measuring")
    parser.add_argument("--plot", type=Path, help="draw tokens, TTFT and memory against frames to this PNG")
    parser.add_argument("--memory-plot", type=Path, help="draw encoding memory against chunks to this PNG")
    args = parser.parse_args(argv)

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        print_report(report)
        if args.plot:
            plot(report, args.plot)
        if args.memory_plot and report.get("memory"):
            plot_memory(report, args.memory_plot)
        return report
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu, tiny = device.type == "cuda", args.tiny
    threads_before = torch.get_num_threads()
    try:
        thread_timings = None
        if args.threads != "auto":
            torch.set_num_threads(int(args.threads))
        elif not (gpu or tiny):
            _, thread_timings = pick_threads(sorted({1, threads_before}))
        return _run(args, device, thread_timings)
    finally:
        torch.set_num_threads(threads_before)


def _run(args: argparse.Namespace, device: torch.device, thread_timings: dict | None) -> dict:
    gpu, quick, tiny = device.type == "cuda", args.quick, args.tiny
    default_size = "56x28" if tiny else "224x140" if quick else "448x252"
    width, height = (int(v) for v in (args.size or default_size).lower().split("x"))
    if width % 28 or height % 28:
        raise ValueError(f"frame sides must be multiples of 28 (patch 14 x merge 2), got {width}x{height}")
    repeats = args.repeats or 3
    if repeats < 3:
        raise ValueError(f"--repeats must be >= 3 (medians of at least 3 runs), got {repeats}")
    setup = Setup(
        device=str(device),
        dtype=args.dtype or ("bfloat16" if gpu else "float32"),
        llm=args.llm or ("tiny" if tiny else "7b" if gpu else "0.5b"),
        depth_divisor=args.depth_divisor or (1 if gpu or tiny else 8),
        width=width,
        height=height,
        frames=args.frames or ([8, 16] if tiny else [16, 64] if quick else [16, 64, 256]),
        repeats=repeats,
        decode_tokens=args.decode_tokens or (2 if tiny else 5 if quick else 32),
        tiny=tiny,
        video_llama_3_all_logits=args.video_llama_3_all_logits,
    )
    torch.manual_seed(0)
    logger.info("Building the three models")
    models = build_models(setup)
    report: dict = {"device": device_name(device), "setup": asdict(setup)}
    report["setup"]["torch"], report["setup"]["threads"] = torch.__version__, torch.get_num_threads()
    report["setup"]["thread_probe_s"] = thread_timings

    if "peers" in args.sections:
        report.update(run_peers(setup, models, build_bare_llm(models["mavors"]), device))
    else:
        report["results"] = []
    if "utilisation" in args.sections:
        chunks = args.utilisation_chunks or (1 if tiny else 4 if quick else 16)
        report["utilisation"] = run_utilisation(
            setup, models["mavors"], device, chunks, rounds=max(repeats, 5 if quick else 7)
        )
    if "memory" in args.sections:
        counts = args.memory_chunks or ([1, 2, 4] if tiny else [8, 32, 60])
        micro_batch = 1 if tiny else args.memory_micro_batch
        report["memory"] = run_memory(
            setup, models["mavors"], device, counts, micro_batch, contrast=not quick
        )

    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot and report["results"]:
        plot(report, args.plot)
    if args.memory_plot and report.get("memory"):
        plot_memory(report, args.memory_plot)
    return report


if __name__ == "__main__":
    main()
