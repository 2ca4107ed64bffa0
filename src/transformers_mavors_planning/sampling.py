"""The sampling plan of the Mavors video processor: pure arithmetic on the timeline and the frame size.

A video is transcoded to a fixed `fps` on its original timeline (target `k` at `k / fps` seconds); beyond
`max_chunks * frames_per_chunk` targets, targets are dropped uniformly (accelerated playback, paper §3.5); the kept
frames are cut into chunks of `frames_per_chunk` frames whose C-RoPE position is `floor(t_first * fps / F)`, and
every frame is resized to one dynamic resolution (SPEC §3.1). `SamplingPlan.build` computes all of it before any
pixel is read, for video files, frame arrays and `MavorsVideoProcessor.get_video_layout` alike.

The processor defaults live here too (`PixelGeometryDefaults`, `VideoSamplingDefaults`): the processor classes
inherit them and `mavors inspect` reads them, so there is one copy. Nothing here imports torch or transformers
(see the package docstring).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# Aspect ratios beyond this are rejected (SPEC §3.1): such an image has a side shorter than one patch
# pair at the ViT's pixel budget, so nothing of it would survive resizing.
MAX_ASPECT_RATIO = 200

# Images (and video frames) with more pixels are refused before their pixels are decoded. 2**27 pixels
# (about 11585 x 11585, 384 MiB as 8-bit RGB) is above any camera sensor and above PIL's own
# decompression-bomb warning level, yet an image this size still decodes in a few seconds on a laptop.
DEFAULT_MAX_IMAGE_PIXELS = 2**27


class PixelGeometryDefaults:
    """ViT geometry shared by the image and video processors: SigLIP-so400m-patch14-384 (R_v 384, patch 14) with
    2x2 pooling, and the pixel-count guard."""

    image_size = 384
    patch_size = 14
    spatial_merge_size = 2
    max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS


class VideoSamplingDefaults(PixelGeometryDefaults):
    """The video processor's sampling defaults (Mavors-7B's): 4 fps, 16-frame chunks, at most 60 chunks."""

    fps = 4.0
    frames_per_chunk = 16
    max_chunks = 60
    num_frames = None


# The options a sampling plan depends on (a subset of `MavorsVideosKwargs`).
PLANNING_OPTIONS = (
    "fps",
    "frames_per_chunk",
    "max_chunks",
    "num_frames",
    "image_size",
    "patch_size",
    "spatial_merge_size",
    "max_image_pixels",
)


# --------------------------------------------------------------------------------------------------------
# Checking options and sizes
# --------------------------------------------------------------------------------------------------------


def validate_positive_ints(options: dict[str, Any], names: tuple[str, ...] | list[str]) -> None:
    """`ValueError` unless every `options[name]` is an integer >= 1 (bools are not integers here)."""
    for key in names:
        value = options.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")


def check_fps(value: Any, name: str) -> float:
    """`value` as a float, or a `ValueError` unless it is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0 (frames per second), got {value!r}")
    return float(value)


def check_image_size(width: int, height: int, max_pixels: int, name: str) -> None:
    """Reject empty, oversized and extremely elongated images (or video frames) with a `ValueError`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"{name} has a zero size ({width}x{height} pixels); width and height must be >= 1")
    if width * height > max_pixels:
        raise ValueError(
            f"{name} has {width}x{height} = {width * height} pixels, more than max_image_pixels={max_pixels}; "
            "downscale it first or raise `max_image_pixels`"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"{name} has an aspect ratio of {ratio:.1f}:1 ({width}x{height}); at most "
            f"{MAX_ASPECT_RATIO}:1 is accepted"
        )


def complete_planning_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check the planning options in `options` (see `PLANNING_OPTIONS`) and add `max_frames`, the most frames kept
    per video: `max_chunks * frames_per_chunk`, capped by `num_frames` when set. Changes and returns `options`."""
    names = ("frames_per_chunk", "max_chunks", "image_size", "patch_size", "spatial_merge_size")
    validate_positive_ints(options, (*names, "max_image_pixels"))
    options["fps"] = check_fps(options["fps"], "fps")
    max_frames = options["max_chunks"] * options["frames_per_chunk"]
    if options.get("num_frames") is not None:
        validate_positive_ints(options, ("num_frames",))
        max_frames = min(max_frames, options["num_frames"])
    options["max_frames"] = max_frames
    return options


def planning_options(stored: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The checked planning options of a video processor without building one: each of `PLANNING_OPTIONS` from
    `overrides`, else from `stored` (a saved video-processor config), else the default; `None` means unset, as in
    the processor's keyword arguments."""
    stored = stored or {}
    options = {}
    for name in PLANNING_OPTIONS:
        value = overrides.get(name)
        if value is None:
            value = stored.get(name)
        options[name] = getattr(VideoSamplingDefaults, name) if value is None else value
    return complete_planning_options(options)


# --------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------


def get_dynamic_resolution(
    width: float, height: float, image_size: int, patch_size: int, spatial_merge_size: int = 2
) -> tuple[int, int]:
    """`(height, width)` in pixels that a `width x height` image or frame is resized to (SPEC §3.1).

    The target is `(R_v * sqrt(W / H), R_v * sqrt(H / W))`: the pixel count of the ViT's `R_v x R_v`
    pretraining images at the input's aspect ratio. Each side is rounded to the nearest multiple of
    `spatial_merge_size * patch_size` (at least one), so the patch grid has sides divisible by the pooling
    window. Example: 1280x720 at R_v=384, p=14 -> (280, 504), a 20x36 patch grid, 180 tokens per chunk.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {ratio:.1f}:1 ({width}x{height}) exceeds {MAX_ASPECT_RATIO}:1")
    unit = patch_size * spatial_merge_size
    aspect = math.sqrt(width / height)

    def round_to_unit(x: float) -> int:
        return max(unit, int(math.floor(x / unit + 0.5)) * unit)

    return round_to_unit(image_size / aspect), round_to_unit(image_size * aspect)


def num_visual_tokens(grid_thw, spatial_merge_size: int = 2) -> int:
    """Number of visual tokens (= placeholder tokens in the text) one grid row produces.

    A row is `(t, h, w)`: `t` chunks (videos) or 1 (an image piece) of `h x w` patches. Each chunk is pooled
    with a `spatial_merge_size x spatial_merge_size` average (2x2 in the paper), so it yields
    `(h / s) * (w / s)` tokens. The processor (placeholder expansion) and the model (feature split) both
    call this function, so the two can never disagree.
    """
    t, h, w = (int(v) for v in grid_thw)
    if h % spatial_merge_size or w % spatial_merge_size:
        raise ValueError(
            f"patch grid {h}x{w} must have sides divisible by spatial_merge_size={spatial_merge_size}"
        )
    return t * (h // spatial_merge_size) * (w // spatial_merge_size)


# --------------------------------------------------------------------------------------------------------
# Timeline
# --------------------------------------------------------------------------------------------------------


def num_fixed_fps_targets(duration: float, fps: float) -> int:
    """How many frames a `duration`-second video has once transcoded to `fps` (at least one)."""
    return max(1, math.ceil(duration * fps - 1e-6))


def accelerated_playback_indices(num_targets: int, max_frames: int) -> list[int]:
    """Indices of the fixed-fps targets that are kept: all, or `max_frames` of them spread uniformly."""
    if num_targets <= max_frames:
        return list(range(num_targets))
    return [(j * num_targets) // max_frames for j in range(max_frames)]


def chunk_position_ids(kept_targets: list[int], frames_per_chunk: int) -> list[int]:
    """C-RoPE position of each chunk: `floor(t_first * fps / F)` with `t_first = kept_target / fps`."""
    return [
        kept_targets[start] // frames_per_chunk for start in range(0, len(kept_targets), frames_per_chunk)
    ]


@dataclass
class MavorsVideoMetadata:
    """What the processor did to one video. Times are seconds on the original timeline, from its start.

    Attributes:
        duration: length of the video.
        fps: the sampling rate on the original timeline (the processor's `fps`).
        sampled_fps: kept frames per second of original time, `fps / playback_speed`.
        playback_speed: 1.0, or the acceleration factor when frames were dropped to fit `max_chunks`.
        num_frames: kept frames, before the last chunk is padded.
        frame_timestamps: timestamp of every kept frame.
        chunk_timestamps: `(first, last)` kept-frame timestamp of every chunk.
        chunk_positions: C-RoPE position id of every chunk.
        source_fps: the input's native frame rate, when known.
        width, height: input frame size; resized_width, resized_height: size fed to the ViT.
        video_backend: `"pyav"` for files, `"frames"` for arrays and frame lists.
    """

    duration: float
    fps: float
    sampled_fps: float
    playback_speed: float
    num_frames: int
    frame_timestamps: list[float] = field(default_factory=list)
    chunk_timestamps: list[tuple[float, float]] = field(default_factory=list)
    chunk_positions: list[int] = field(default_factory=list)
    source_fps: float | None = None
    width: int = 0
    height: int = 0
    resized_width: int = 0
    resized_height: int = 0
    video_backend: str = "pyav"

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SamplingPlan:
    """What a video becomes before any pixel is read: the fixed-fps targets kept, the frame size fed to the ViT
    (`(height, width)`), the patch grid and the metadata. Built from the timeline and the frame size alone
    (container header, array shape)."""

    kept: list[int]
    size: tuple[int, int]
    grid_thw: tuple[int, int, int]
    metadata: MavorsVideoMetadata

    @classmethod
    def build(
        cls,
        duration: float,
        num_targets: int,
        width: int,
        height: int,
        options: dict[str, Any],
        display_width: float | None = None,
        **extra: Any,
    ) -> SamplingPlan:
        """Plan `duration` seconds of `num_targets` frames at `options["fps"]`, each `width x height` pixels (shown
        `display_width` wide when its pixels are not square). `options` are `complete_planning_options`'."""
        fps, frames_per_chunk, patch_size = options["fps"], options["frames_per_chunk"], options["patch_size"]
        size = get_dynamic_resolution(
            display_width or width, height, options["image_size"], patch_size, options["spatial_merge_size"]
        )
        kept = accelerated_playback_indices(num_targets, options["max_frames"])
        timestamps = [k / fps for k in kept]
        speed = num_targets / len(kept)
        metadata = MavorsVideoMetadata(
            duration=duration,
            fps=fps,
            sampled_fps=fps / speed,
            playback_speed=speed,
            num_frames=len(kept),
            frame_timestamps=timestamps,
            chunk_timestamps=[
                (timestamps[start], timestamps[min(start + frames_per_chunk, len(kept)) - 1])
                for start in range(0, len(kept), frames_per_chunk)
            ],
            chunk_positions=chunk_position_ids(kept, frames_per_chunk),
            width=width,
            height=height,
            resized_width=size[1],
            resized_height=size[0],
            **extra,
        )
        grid_thw = (math.ceil(len(kept) / frames_per_chunk), size[0] // patch_size, size[1] // patch_size)
        return cls(kept, size, grid_thw, metadata)

    @classmethod
    def from_header(cls, header: Any, options: dict[str, Any]) -> SamplingPlan:
        """The plan of a video file from its container header (a `video_header.VideoHeader`)."""
        return cls.build(
            header.duration,
            num_fixed_fps_targets(header.duration, options["fps"]),
            header.width,
            header.height,
            options,
            display_width=header.display_width,
            source_fps=header.source_fps,
            video_backend="pyav",
        )

    def num_tokens_per_chunk(self, spatial_merge_size: int) -> int:
        """Visual tokens each chunk of this plan becomes after `spatial_merge_size` pooling."""
        return num_visual_tokens((1, self.grid_thw[1], self.grid_thw[2]), spatial_merge_size)

    def layout(self) -> dict[str, Any]:
        """The public view: `grid_thw`, `chunk_positions` and `metadata`."""
        return {
            "grid_thw": self.grid_thw,
            "chunk_positions": self.metadata.chunk_positions,
            "metadata": self.metadata,
        }


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_ASPECT_RATIO",
    "PLANNING_OPTIONS",
    "MavorsVideoMetadata",
    "PixelGeometryDefaults",
    "SamplingPlan",
    "VideoSamplingDefaults",
    "accelerated_playback_indices",
    "check_fps",
    "check_image_size",
    "chunk_position_ids",
    "complete_planning_options",
    "get_dynamic_resolution",
    "num_fixed_fps_targets",
    "num_visual_tokens",
    "planning_options",
    "validate_positive_ints",
]
