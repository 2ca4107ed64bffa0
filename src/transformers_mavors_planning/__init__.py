"""What a video becomes, planned without torch or transformers: the part of Mavors that `mavors inspect` runs.

This package sits beside `transformers_mavors`, not inside it, for the reason `transformers_mavors_cli.py` does:
importing anything inside `transformers_mavors` runs its `__init__`, which imports torch and transformers to register
the Auto classes (seconds of CPU and hundreds of MB). Everything here needs only the standard library, PyAV and
(for Hub ids) huggingface_hub, and it is the one home of that logic: the video processor and the checkpoint loaders
of `transformers_mavors` import it from here, so the light path and the full one cannot drift apart.

- `sampling`: the processor defaults, the fixed-fps sampling plan (accelerated playback, C-RoPE chunk positions,
  dynamic resolution, tokens per chunk) and `MavorsVideoMetadata`.
- `video_header`: a video file's container header (duration, frame rate, size, sample aspect, display rotation)
  read with PyAV without decoding a frame; `transformers_mavors.media_io.VideoReader` decodes on top of it.
- `checkpoint`: finding a checkpoint (directory or Hub id), checking its files, and reading the video-processor
  options it saved.
- `report`: the `mavors inspect` command built from the three.

Submodules are imported on demand (this `__init__` imports nothing), so `sampling` alone does not load PyAV.
"""
