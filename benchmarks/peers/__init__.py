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

# Where things live (each module one concern; `benchmarks/peers.py` is the entry point):
#   config.py       the three models' names, the video's frame rate and F, Qwen2.5's token ids, `Setup`
#   video.py        `benchmark_frames`, the generated video every model (and benchmarks/compression.py) gets
#   models.py       the three architectures behind one shared Qwen2 LLM, at full or reduced depth
#   inputs.py       each model's tensors and prompt for the same frames, built its own way
#   measure.py      the probes: step clock, memory probe, one timed `generate`, the CPU thread pick
#   comparison.py   the side-by-side section: every model at every frame count, interleaved rounds
#   utilisation.py  the vision encoder's FLOP count and its FLOP/s against `torch.mm` on its GEMM shapes
#   memory.py       peak encoding memory against video length, with micro-batching
#   report.py       the printed tables and the two plots
#   cli.py          the arguments, the defaults per device and mode, and the order the sections run in
