"""Video processor of Mavors: PyAV decoding, fixed-fps sampling, chunking and accelerated playback.

A video is transcoded to a fixed frame rate `fps` on its original timeline: target `k` sits at `k / fps`
seconds and takes the frame on screen at that moment (the last frame whose timestamp is not later), so
variable-frame-rate files sample correctly and slower sources repeat frames. When the video yields more than
`max_chunks * frames_per_chunk` targets, targets are dropped uniformly to fit (accelerated playback, paper
§3.5). The kept frames are cut into chunks of `frames_per_chunk` (F) frames, the last one padded by repeating
its last frame, resized to one dynamic resolution per video (SPEC §3.1), normalised and packed (SPEC §7):

- `pixel_values_videos`: (sum of patches, 3 * F * p * p) float32; chunk-major, then row-major over the
  chunk's patch grid; each row holds one patch of all F frames, values ordered (C, F, p, p).
- `video_grid_thw`: (videos, 3) long, `(chunks, h_patches, w_patches)`; both sides even.
- `video_chunk_positions`: (sum of chunks,) long, the C-RoPE position of each chunk:
  `floor(t_first * fps / F)` with `t_first` the original-timeline timestamp of the chunk's first frame.
  Without acceleration the positions are 0, 1, 2, ...; with it they skip, telling the model that time passed.

Decoding is `media_io.VideoReader`'s (PyAV, threaded decoding): it plans from the container header, and
when kept frames are far apart (long videos under accelerated playback) it seeks to the keyframe before the
next kept frame instead of decoding everything in between. Only the frames that are kept are converted to RGB
(and resized, in the same libswscale call). `plan_video` and `get_video_layout` give the plan without decoding.
"""

import math
import os
import queue
import threading
from contextlib import closing
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import VideoProcessorMixin

from transformers_mavors_planning.sampling import (
    MavorsVideoMetadata,
    SamplingPlan,
    VideoSamplingDefaults,
    accelerated_playback_indices,
    check_fps,
    check_image_size,
    chunk_position_ids,
    complete_planning_options,
    num_fixed_fps_targets,
    validate_positive_ints,
)

from .image_processing_mavors import MavorsPixelDefaults, normalization_affine
from .media_io import (
    VideoReader,
    array_to_rgb_image,
    check_media_file,
    describe_input,
    merge_call_options,
    pil_to_rgb,
    to_return_type,
)

logger = logging.get_logger(__name__)

# Videos longer than this show a progress bar while they decode.
PROGRESS_BAR_MIN_SECONDS = 60.0


class MavorsVideosKwargs(VideosKwargs, total=False):
    """Keyword arguments of [`MavorsVideoProcessor`] on top of transformers' `VideosKwargs`.

    Attributes:
        frames_per_chunk (`int`): F, frames per chunk; must equal the model's `vision_config.frames_per_chunk`.
        max_chunks (`int`): most chunks per video; longer videos are sped up by dropping frames uniformly.
        image_size (`int`): R_v, the ViT's pretraining resolution.
        patch_size (`int`): p, the ViT's patch side.
        spatial_merge_size (`int`): side of the average pooling; frame sides are multiples of it times p.
        max_image_pixels (`int`): videos whose frames have more pixels are refused before decoding.
        progress_min_seconds (`float`): video files longer than this many seconds show a decoding progress bar
            (default `PROGRESS_BAR_MIN_SECONDS`, a minute; the `mavors` command line passes 0).
    """

    frames_per_chunk: int
    max_chunks: int
    image_size: int
    patch_size: int
    spatial_merge_size: int
    max_image_pixels: int
    progress_min_seconds: float


# --------------------------------------------------------------------------------------------------------
# Input classification
# --------------------------------------------------------------------------------------------------------


def _is_frame(value: Any) -> bool:
    if isinstance(value, PIL.Image.Image):
        return True
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim in (2, 3)


def is_video_like(value: Any) -> bool:
    """True for one video: a path, a file object, bytes, a (T, H, W, C) array/tensor or a list of frames."""
    if isinstance(value, (str, os.PathLike, bytes)) or hasattr(value, "read"):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim == 4
    if isinstance(value, (list, tuple)):
        return len(value) > 0 and all(_is_frame(frame) for frame in value)
    return False


def make_list_of_videos(videos: Any, _where: str = "videos") -> list[Any]:
    """Flatten a video, a list of videos or a batch (list of lists of videos) into a list of videos.

    `videos=None` means no videos; a `None` inside a list (a video or a frame) is a `ValueError` naming its index."""
    if videos is None:
        return []
    if is_video_like(videos):
        return [videos]
    if isinstance(videos, (list, tuple)):
        if any(item is None for item in videos):
            index = next(i for i, item in enumerate(videos) if item is None)
            if any(_is_frame(item) for item in videos):
                raise ValueError(
                    f"frame {index} of the frame list {_where} is None; every frame must be a PIL image or an "
                    "(H, W, C) array"
                )
            raise ValueError(
                f"{_where}[{index}] is None; every item must be a video (path, file object, bytes, "
                "(T, H, W, C) array or list of frames) or a list of videos"
            )
        return [
            video for i, item in enumerate(videos) for video in make_list_of_videos(item, f"{_where}[{i}]")
        ]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        raise ValueError(
            f"a video array must have 4 dimensions (T, H, W, C), got shape {tuple(videos.shape)}"
        )
    raise TypeError(
        f"unsupported video input {describe_input(videos)}; expected a path, a file object, bytes, a "
        "(T, H, W, C) numpy array or torch tensor, a list of PIL images, or a list of those"
    )


def _metadata_fps(metadata: Any) -> float | None:
    if metadata is None:
        return None
    value = metadata.get("fps") if isinstance(metadata, dict) else getattr(metadata, "fps", None)
    return None if value is None else float(value)


# --------------------------------------------------------------------------------------------------------
# Chunk packing
# --------------------------------------------------------------------------------------------------------


def pack_chunks(
    frames: np.ndarray,
    frames_per_chunk: int,
    patch_size: int,
    scale: torch.Tensor,
    shift: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(chunks * F, H, W, 3) uint8 -> (chunks * H/p * W/p, 3 * F * p * p) float32, normalised.

    Rows are chunk-major, then row-major over the patch grid; each row is one patch of all F frames with values
    ordered (C, F, p, p). Normalisation (`x * scale + shift` per channel) happens in the same pass as the
    reordering copy.
    """
    total, height, width, _ = frames.shape
    p = patch_size
    chunks, grid_h, grid_w = total // frames_per_chunk, height // p, width // p
    source = torch.from_numpy(frames).view(chunks, frames_per_chunk, grid_h, p, grid_w, p, 3)
    source = source.permute(0, 2, 4, 6, 1, 3, 5)  # (chunks, gh, gw, C, F, p, p)
    if out is None:
        out = torch.empty(chunks * grid_h * grid_w, 3 * frames_per_chunk * p * p, dtype=torch.float32)
    view = out.view(chunks, grid_h, grid_w, 3, frames_per_chunk, p, p)
    torch.addcmul(shift.view(1, 1, 1, 3, 1, 1, 1), source, scale.view(1, 1, 1, 3, 1, 1, 1), out=view)
    return out


_REPEAT = object()  # `_ChunkWriter.put` item: the previous frame again
_STOP = object()


class _ChunkWriter:
    """Receives one video's kept frames in order and packs every full chunk straight into `out`.

    Items are uint8 (H, W, 3) arrays, decoded frames for `convert`, or `_REPEAT`. With `threaded=True`,
    conversion (libswscale) and packing (torch) run on a worker thread; both release the GIL, so they overlap
    with decoding instead of stalling it. Only a few frames and one chunk of uint8 pixels are held at a time.
    """

    def __init__(
        self,
        out: torch.Tensor,
        frames_per_chunk: int,
        size: tuple[int, int],
        options: dict[str, Any],
        convert: Any = None,
        threaded: bool = False,
    ) -> None:
        self.out, self.frames_per_chunk, self.convert = out, frames_per_chunk, convert
        self.patch_size = options["patch_size"]
        self.scale, self.shift = options["scale"], options["shift"]
        self.rows_per_chunk = (size[0] // self.patch_size) * (size[1] // self.patch_size)
        self.chunk = np.empty((frames_per_chunk, size[0], size[1], 3), dtype=np.uint8)
        self.filled, self.chunk_index = 0, 0
        self.last: np.ndarray | None = None
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        # the worker packs into `out` in place: it runs under the caller's inference mode, which is per thread
        self._inference_mode = torch.is_inference_mode_enabled()
        if threaded:
            self._queue = queue.Queue(maxsize=2 * frames_per_chunk)
            self._worker = threading.Thread(target=self._work, name="mavors-video-packer", daemon=True)
            self._worker.start()

    def put(self, item: Any) -> None:
        if self._queue is None:
            self._consume(item)
        elif self._error is None:
            self._queue.put(item)
        else:
            self.close()

    def repeat_last(self) -> None:
        self.put(_REPEAT)

    def finish(self) -> None:
        """Wait for queued frames, then pad the short last chunk by repeating its last frame and pack it."""
        self.close()
        if self.filled:
            self.chunk[self.filled :] = self.last
            self._flush()

    def close(self) -> None:
        """Stop the worker (idempotent) and re-raise its error, if any."""
        if self._queue is not None:
            self._queue.put(_STOP)
            self._worker.join()
            self._queue = None
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        with torch.inference_mode(self._inference_mode):
            while (item := self._queue.get()) is not _STOP:
                if self._error is None:
                    try:
                        self._consume(item)
                    except BaseException as error:  # re-raised in the calling thread by `close`
                        self._error = error

    def _consume(self, item: Any) -> None:
        if item is _REPEAT:
            frame = self.last
        elif isinstance(item, np.ndarray):
            frame = item
        else:
            frame = self.convert(item)
        self.chunk[self.filled] = frame
        self.last = frame
        self.filled += 1
        if self.filled == self.frames_per_chunk:
            self._flush()

    def _flush(self) -> None:
        start = self.chunk_index * self.rows_per_chunk
        target = self.out[start : start + self.rows_per_chunk]
        pack_chunks(self.chunk, self.frames_per_chunk, self.patch_size, self.scale, self.shift, out=target)
        self.chunk_index += 1
        self.filled = 0


# --------------------------------------------------------------------------------------------------------
# Video sources: each plans its sampling when created (cheap), then decodes into a `_ChunkWriter`
# --------------------------------------------------------------------------------------------------------


class _VideoSource:
    # Whether decoding leaves CPU time that a worker thread can use for conversion and packing.
    threaded = False
    name: str
    plan: SamplingPlan

    def convert(self, frame: Any) -> np.ndarray:
        raise NotImplementedError

    def decode_into(self, writer: _ChunkWriter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FrameListSource(_VideoSource):
    """A (T, H, W, C) array/tensor or a list of frames; frame i sits at i / fps, or i / source_fps if given."""

    def __init__(self, frames: Any, source_fps: float | None, options: dict[str, Any]) -> None:
        self.name = describe_input(frames)
        self.frames = frames
        total = len(frames)
        fps = options["fps"]
        if source_fps is None:
            num_targets, duration = total, total / fps
            self.source_index = list(range(total))
        else:
            duration = total / source_fps
            num_targets = num_fixed_fps_targets(duration, fps)
            # The frame on screen at target time k / fps.
            self.source_index = [
                min(total - 1, math.floor(k * source_fps / fps + 1e-6)) for k in range(num_targets)
            ]
        # The first kept target is always target 0: its frame gives the video's size.
        self.first = self._rgb(self.source_index[0])
        width, height = self.first.size
        check_image_size(width, height, options["max_image_pixels"], f"video {self.name}")
        self.plan = SamplingPlan.build(
            duration, num_targets, width, height, options, source_fps=source_fps, video_backend="frames"
        )
        self.resample = PILImageResampling(options["resample"])

    def _rgb(self, index: int) -> PIL.Image.Image:
        frame = self.frames[index]
        if isinstance(frame, PIL.Image.Image):
            return pil_to_rgb(frame)
        if isinstance(frame, (np.ndarray, torch.Tensor)):
            return array_to_rgb_image(frame, f"frame {index} of video {self.name}")
        raise TypeError(
            f"frame {index} of video {self.name} is a {type(frame).__name__}, not a PIL image or an array"
        )

    def decode_into(self, writer: _ChunkWriter) -> None:
        height, width = self.plan.size
        previous_index = None
        for row, target in enumerate(self.plan.kept):
            index = self.source_index[target]
            if index == previous_index:
                writer.repeat_last()
                continue
            image = self.first if row == 0 else self._rgb(index)
            writer.put(np.asarray(image.resize((width, height), resample=self.resample)))
            previous_index = index


class _FileSource(_VideoSource):
    """A media file (path, file object or bytes): planned from its container header, decoded by `VideoReader`."""

    threaded = True

    def __init__(self, source: Any, options: dict[str, Any]) -> None:
        self.reader = reader = VideoReader(source, max_pixels=options["max_image_pixels"])
        self.name = reader.name
        try:
            self.plan = SamplingPlan.from_header(reader, options)
        except BaseException:
            reader.close()
            raise
        self.resample = options["resample"]
        progress_min_seconds = options.get("progress_min_seconds")
        if progress_min_seconds is None:
            progress_min_seconds = PROGRESS_BAR_MIN_SECONDS
        self.progress = reader.duration > progress_min_seconds

    def close(self) -> None:
        self.reader.close()

    def convert(self, frame: Any) -> np.ndarray:
        """Resize and convert a decoded frame to uint8 RGB in one libswscale call."""
        return self.reader.to_rgb(frame, self.plan.size, self.resample)

    def decode_into(self, writer: _ChunkWriter) -> None:
        """Every kept target gets the frame on screen at its time; a frame shown at several targets is converted
        once and repeated."""
        frames = self.reader.frames_at(self.plan.metadata.frame_timestamps, progress=self.progress)
        last = None
        with closing(frames):
            for frame in frames:
                if frame is last:
                    writer.repeat_last()
                else:
                    writer.put(frame)
                    last = frame


# --------------------------------------------------------------------------------------------------------
# The video processor
# --------------------------------------------------------------------------------------------------------


class MavorsVideoProcessor(VideoSamplingDefaults, MavorsPixelDefaults, VideoProcessorMixin):
    r"""
    Video processor of Mavors (PyAV decoding, no torchvision).

    Accepts video files (path, file object or bytes; any container/codec FFmpeg reads), (T, H, W, C) numpy
    arrays or torch tensors, and lists of PIL images or (H, W, C) arrays. Arrays and frame lists carry no
    timeline: they are taken as already sampled at `fps` (frame i at i / fps) unless
    `video_metadata={"fps": source_fps}` is given, which resamples them to `fps`.

    Args:
        fps (`float`, *optional*, defaults to 4.0):
            Frames per second of the fixed-rate transcode (see `docs/preprocessing.md` for the choice).
        frames_per_chunk (`int`, *optional*, defaults to 16):
            F; must equal the model's `vision_config.frames_per_chunk`.
        max_chunks (`int`, *optional*, defaults to 60):
            The most chunks per video (60 chunks = 960 frames, the paper's needle-in-a-haystack maximum).
            Longer videos are played faster: frames are dropped uniformly, positions keep original time.
        num_frames (`int`, *optional*):
            An extra cap on kept frames per video, applied like `max_chunks`.
        image_size (`int`, *optional*, defaults to 384), patch_size (`int`, *optional*, defaults to 14),
        spatial_merge_size (`int`, *optional*, defaults to 2):
            Geometry of the ViT; frames get the dynamic resolution of SPEC §3.1.
        max_image_pixels (`int`, *optional*, defaults to 2**27):
            Videos whose frames have more pixels are refused before decoding.
        image_mean, image_std, resample, do_rescale, rescale_factor, do_normalize:
            As for images (SigLIP's 0.5 mean and std, bicubic resampling).
        return_metadata (`bool`, *optional*, defaults to `False`):
            Also return `video_metadata`, a list of [`MavorsVideoMetadata`].
    """

    valid_kwargs = MavorsVideosKwargs
    model_input_names = ["pixel_values_videos", "video_grid_thw", "video_chunk_positions"]

    # fps, frames_per_chunk, max_chunks and the geometry: `VideoSamplingDefaults` (shared with `mavors inspect`)
    do_sample_frames = True
    return_metadata = False

    def __init__(self, **kwargs: Unpack[MavorsVideosKwargs]) -> None:
        super().__init__(**kwargs)
        self._set_attributes(**kwargs)

    def preprocess(self, videos: Any, **kwargs: Unpack[MavorsVideosKwargs]) -> BatchFeature:
        """Decode, sample, chunk, resize, normalise and pack one video or a list of videos.

        Returns a `BatchFeature` with `pixel_values_videos`, `video_grid_thw`, `video_chunk_positions` (torch
        tensors; numpy with `return_tensors="np"`) and, with `return_metadata=True`, `video_metadata`.
        """
        options = self._resolve_options(kwargs)
        video_list = make_list_of_videos(videos)
        metadata_list = self._split_metadata(options.get("video_metadata"), len(video_list))
        for video in video_list:  # cheap checks first: a bad input fails before anything is decoded
            self._precheck(video)

        frames_per_chunk, patch_size = options["frames_per_chunk"], options["patch_size"]
        sources: list[_VideoSource] = []
        try:
            for video, metadata in zip(video_list, metadata_list, strict=True):
                sources.append(self._open(video, metadata, options))
            grid_thw = [source.plan.grid_thw for source in sources]
            row_counts = [t * h * w for t, h, w in grid_thw]
            pixel_values = torch.empty(
                sum(row_counts), 3 * frames_per_chunk * patch_size**2, dtype=torch.float32
            )
            offset = 0
            for source, rows in zip(sources, row_counts, strict=True):
                writer = _ChunkWriter(
                    pixel_values[offset : offset + rows],
                    frames_per_chunk,
                    source.plan.size,
                    options,
                    convert=source.convert,
                    threaded=source.threaded,
                )
                try:
                    source.decode_into(writer)
                    writer.finish()
                finally:
                    writer.close()
                offset += rows
        finally:
            for source in sources:
                source.close()

        positions = [position for source in sources for position in source.plan.metadata.chunk_positions]
        data = {
            "pixel_values_videos": pixel_values,
            "video_grid_thw": torch.tensor(grid_thw, dtype=torch.long).reshape(-1, 3),
            "video_chunk_positions": torch.tensor(positions, dtype=torch.long),
        }
        data = to_return_type(data, options.get("return_tensors"))
        if options.get("return_metadata"):
            data["video_metadata"] = [source.plan.metadata for source in sources]
        return BatchFeature(data=data, skip_tensor_conversion=["video_metadata"])

    # -- planning without pixels ---------------------------------------------------------------------------

    def get_video_layout(
        self, num_frames: int, height: int, width: int, **kwargs: Unpack[MavorsVideosKwargs]
    ) -> dict[str, Any]:
        """The plan of a video of `num_frames` frames of `width x height` pixels already at the processor's `fps`
        (what a `(num_frames, height, width, 3)` array becomes without `video_metadata`), without pixels.

        `min(num_frames, max_chunks * frames_per_chunk)` frames are kept (accelerated playback beyond that), in
        `ceil(kept / frames_per_chunk)` chunks. Returns a dict with `grid_thw` `(chunks, h_patches, w_patches)`,
        `chunk_positions` and `metadata` (a [`MavorsVideoMetadata`]).
        """
        options = self._resolve_options(kwargs)
        sizes = {"num_frames": num_frames, "height": height, "width": width}
        validate_positive_ints(sizes, tuple(sizes))
        check_image_size(width, height, options["max_image_pixels"], f"a video of {width}x{height} frames")
        plan = SamplingPlan.build(
            num_frames / options["fps"], num_frames, width, height, options, video_backend="frames"
        )
        return plan.layout()

    def plan_video(
        self, video: Any, video_metadata: Any = None, **kwargs: Unpack[MavorsVideosKwargs]
    ) -> dict[str, Any]:
        """The plan `preprocess` makes for one video (file, file object, bytes, array or frame list), from the
        container header or the array's shape: no frame is decoded (of a frame list, only the first is read, for its
        size). Returns the dict of `get_video_layout`; its `metadata` is `preprocess(..., return_metadata=True)`'s.
        """
        options = self._resolve_options(kwargs)
        videos = make_list_of_videos(video)
        if len(videos) != 1:
            raise ValueError(f"plan_video plans one video, got {len(videos)}")
        self._precheck(videos[0])
        (metadata,) = self._split_metadata(video_metadata, 1)
        source = self._open(videos[0], metadata, options)
        try:
            return source.plan.layout()
        finally:
            source.close()

    # -- input handling ------------------------------------------------------------------------------------

    def _resolve_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = complete_planning_options(merge_call_options(self, kwargs))
        options["scale"], options["shift"] = normalization_affine(
            options["do_rescale"],
            options["rescale_factor"],
            options["do_normalize"],
            options["image_mean"],
            options["image_std"],
        )
        return options

    @staticmethod
    def _split_metadata(video_metadata: Any, num_videos: int) -> list[Any]:
        if video_metadata is None:
            return [None] * num_videos
        if isinstance(video_metadata, (list, tuple)):
            flat = []
            for item in video_metadata:
                flat += list(item) if isinstance(item, (list, tuple)) else [item]
            if len(flat) != num_videos:
                raise ValueError(f"got {len(flat)} video_metadata entries for {num_videos} videos")
            return flat
        if num_videos != 1:
            raise ValueError(f"got one video_metadata for {num_videos} videos; pass a list, one per video")
        return [video_metadata]

    @staticmethod
    def _precheck(video: Any) -> None:
        name = describe_input(video)
        if isinstance(video, (str, os.PathLike)):
            check_media_file(video, "video", name)
        elif isinstance(video, bytes) and len(video) == 0:
            raise ValueError("video bytes are empty (0 bytes)")
        elif isinstance(video, (np.ndarray, torch.Tensor)) and video.shape[0] == 0:
            raise ValueError(f"video {name} has no frames")

    @staticmethod
    def _open(video: Any, metadata: Any, options: dict[str, Any]) -> _VideoSource:
        if isinstance(video, (str, os.PathLike, bytes)) or hasattr(video, "read"):
            if _metadata_fps(metadata) is not None:
                logger.warning_once(
                    "video_metadata['fps'] is ignored for video files: their timestamps are used."
                )
            return _FileSource(video, options)
        source_fps = _metadata_fps(metadata)
        if source_fps is not None:
            source_fps = check_fps(source_fps, "video_metadata['fps']")
        return _FrameListSource(video, source_fps, options)


__all__ = [
    "MavorsVideoProcessor",
    "MavorsVideoMetadata",
    "MavorsVideosKwargs",
    "accelerated_playback_indices",
    "chunk_position_ids",
    "make_list_of_videos",
]
