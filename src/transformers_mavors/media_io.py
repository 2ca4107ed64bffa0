"""Media input and output shared by the image and video processors, the evaluation and the training helpers.

- Images: opening files, bytes, URLs and file objects with size checks before any pixel is decoded, and turning
  PIL images or arrays of any common mode and dtype into RGB (`load_rgb_image`).
- Videos: one PyAV reader (`VideoReader`, `read_video`) and one writer (`write_video`) for the whole package.
  The reader knows the stream's timeline from the container header before decoding (its header part,
  `VideoHeader`, lives in `transformers_mavors_planning.video_header` so `mavors inspect` reads it without torch),
  and gives either every frame or the frame on screen at given times (the fixed-fps transcode of the video
  processor, SPEC §3.3).
- Call options: merging a processor's stored defaults with a call's keyword arguments, with typed errors.

Errors name the offending input and say what is accepted: `FileNotFoundError` for missing files, `ValueError` for
unreadable, empty, truncated, oversized or extremely elongated media, `TypeError` for unsupported input types.
"""

import io
import itertools
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from av.video.reformatter import VideoReformatter
from huggingface_hub.dataclasses import validate_typed_dict
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers.image_utils import PILImageResampling
from transformers.utils import logging

from transformers_mavors_planning.sampling import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_ASPECT_RATIO,
    check_image_size,
    num_fixed_fps_targets,
    validate_positive_ints,
)
from transformers_mavors_planning.video_header import (
    VideoHeader,
    check_media_file,
    describe_source,
    read_mp4_rotation,
)

logger = logging.get_logger(__name__)

# Input dtypes understood by `array_to_rgb_image`, and the value range each is taken to have.
_ACCEPTED_DTYPES = "uint8 (0-255), uint16 (0-65535), bool, float16/float32/float64 (0-1)"

# Float pixels this far outside [0, 1] are still accepted (rounding of computed images), and clipped.
_FLOAT_RANGE_SLACK = 1e-3
# A file whose decodable frames end this much earlier than its header's duration is reported as truncated.
TRUNCATION_TOLERANCE_SECONDS = 1.0
# Seek instead of decoding through when the next wanted frame is this many keyframe intervals ahead.
SEEK_MIN_KEYFRAME_INTERVALS = 2.0
# A frame whose timestamp is at most this much later than a wanted time counts as on screen at that time.
_TIME_EPSILON = 1e-4

_SWSCALE_INTERPOLATION = {
    PILImageResampling.NEAREST: "POINT",
    PILImageResampling.BILINEAR: "BILINEAR",
    PILImageResampling.BICUBIC: "BICUBIC",
    PILImageResampling.LANCZOS: "LANCZOS",
    PILImageResampling.BOX: "AREA",
    PILImageResampling.HAMMING: "BICUBIC",
}


# --------------------------------------------------------------------------------------------------------
# Describing and checking inputs
# --------------------------------------------------------------------------------------------------------


def describe_input(value: Any) -> str:
    """A short human name of an input, for error messages."""
    if isinstance(value, PIL.Image.Image):
        return f"PIL image {value.size[0]}x{value.size[1]} mode {value.mode}"
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return describe_source(value)


# --------------------------------------------------------------------------------------------------------
# Images: decoding and RGB conversion
# --------------------------------------------------------------------------------------------------------


def open_image(
    source: str | os.PathLike | bytes | Any, max_pixels: int, name: str | None = None
) -> PIL.Image.Image:
    """Open an image file (path, bytes, file object, http(s) URL or base64 string), refusing oversized ones.

    PIL reads only the header in `Image.open`, so the size check happens before any pixel is decoded.
    """
    name = name or describe_input(source)
    if isinstance(source, str) and (source.startswith(("http://", "https://")) or source.startswith("data:")):
        from transformers.image_utils import load_image

        try:
            image = load_image(source)
        except Exception as error:  # the HTTP client's own errors (httpx, or its absence) included
            raise ValueError(
                f"image {name} cannot be fetched or read ({type(error).__name__}: {error})"
            ) from error
        check_image_size(image.width, image.height, max_pixels, f"image {name}")
        return image
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        check_media_file(source, "image", name)
    try:
        with warnings.catch_warnings():
            # Our own `max_pixels` check below replaces PIL's decompression-bomb warning.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(source)
    except PIL.Image.DecompressionBombError as error:
        raise ValueError(f"image {name} is larger than max_image_pixels={max_pixels}: {error}") from error
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(
            f"image {name} cannot be read: not a valid or complete image file ({error})"
        ) from error
    check_image_size(image.width, image.height, max_pixels, f"image {name}")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {name} is truncated or corrupt: {error}") from error
    return image


def pil_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB copy of a PIL image: EXIF orientation applied, alpha composited on white, 16-bit scaled to 8-bit."""
    if image.getexif().get(0x0112, 1) != 1:  # 0x0112 = Orientation
        image = PIL.ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return PIL.Image.fromarray(_to_uint8(np.asarray(image), high_bit_depth=mode != "F")).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _to_uint8(array: np.ndarray, high_bit_depth: bool = True) -> np.ndarray:
    """Scale an integer or float array to uint8 by its dtype's nominal range (see `_ACCEPTED_DTYPES`)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16 or (high_bit_depth and array.dtype.kind in "iu"):
        # 16-bit samples (PIL's "I;16"/"I" modes hold 16-bit PNGs); 65535 / 257 = 255 exactly.
        return (np.clip(array, 0, 65535).astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if array.dtype.kind == "f":
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"unsupported pixel dtype {array.dtype}; accepted: {_ACCEPTED_DTYPES}")


def check_float_range(array: np.ndarray, name: str) -> None:
    """`ValueError` unless a float pixel array is finite and in [0, 1], naming the range found.

    Clipping would hide the usual mistake, a 0-255 float array (it would come out nearly all white)."""
    finite = np.isfinite(array)
    if not finite.all():
        kinds = [
            label for label, bad in (("NaN", np.isnan(array).any()), ("inf", np.isinf(array).any())) if bad
        ]
        raise ValueError(
            f"{name}: float pixels must be finite and in [0, 1], found {' and '.join(kinds)} "
            f"({int((~finite).sum())} values)"
        )
    low, high = float(array.min()), float(array.max())
    if low < -_FLOAT_RANGE_SLACK or high > 1.0 + _FLOAT_RANGE_SLACK:
        hint = "; divide by 255 (or pass uint8)" if high > 1.0 and low >= 0.0 and high <= 255.0 else ""
        raise ValueError(f"{name}: float pixels must be in [0, 1], found values in [{low:g}, {high:g}]{hint}")


def array_to_rgb_image(array: np.ndarray | torch.Tensor, name: str) -> PIL.Image.Image:
    """PIL RGB image of a (H, W), (H, W, C) or (C, H, W) array, C in {1, 3, 4} (4 = RGBA, composited on white)."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        if tensor.dtype not in (torch.uint8, torch.bool, torch.float32, torch.float64, torch.uint16):
            raise TypeError(f"{name}: unsupported tensor dtype {tensor.dtype}; accepted: {_ACCEPTED_DTYPES}")
        array = tensor.numpy()
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16, np.bool_, np.float16, np.float32, np.float64):
        raise TypeError(f"{name}: unsupported pixel dtype {array.dtype}; accepted: {_ACCEPTED_DTYPES}")
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{name}: an image array must be (H, W), (H, W, C) or (C, H, W) with C in (1, 3, 4), "
            f"got shape {tuple(array.shape)}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has a zero size ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.dtype.kind == "f":
        check_float_range(array, name)
    array = _to_uint8(array, high_bit_depth=False)
    channels = array.shape[-1]
    if channels == 1:
        return PIL.Image.fromarray(np.ascontiguousarray(array[..., 0])).convert("RGB")
    if channels == 4:
        return pil_to_rgb(PIL.Image.fromarray(np.ascontiguousarray(array)))
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def load_rgb_image(image: Any, max_pixels: int) -> PIL.Image.Image:
    """Any accepted image input -> PIL RGB image, with size checks before decoding where possible."""
    name = describe_input(image)
    if isinstance(image, PIL.Image.Image):
        check_image_size(image.width, image.height, max_pixels, f"image {name}")
        return pil_to_rgb(image)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        rgb = array_to_rgb_image(image, f"image {name}")
        check_image_size(rgb.width, rgb.height, max_pixels, f"image {name}")
        return rgb
    if isinstance(image, (str, os.PathLike, bytes)) or hasattr(image, "read"):
        return pil_to_rgb(open_image(image, max_pixels, name))
    raise TypeError(
        f"unsupported image input {name}; expected a PIL image, a numpy array or torch tensor "
        "((H, W), (H, W, C) or (C, H, W)), a path, bytes, a file object or an http(s) URL"
    )


# --------------------------------------------------------------------------------------------------------
# Videos: one reader
# --------------------------------------------------------------------------------------------------------


class _SeekPolicy:
    """When decoding should jump ahead instead of decoding through to the next wanted time.

    It seeks when that time is more than `SEEK_MIN_KEYFRAME_INTERVALS` keyframe intervals ahead (the largest
    keyframe gap seen so far), at most once per wanted time, and never again once a seek landed behind the
    position decoding had already reached (a file whose index cannot seek precisely).
    """

    def __init__(self) -> None:
        self.keyframe_interval: float | None = None
        self.last_keyframe: float | None = None
        self.allowed = True
        self.seeked_row = -1
        self.position_before_seek: float | None = None

    def observe(self, time: float, is_keyframe: bool) -> None:
        """Account for a decoded frame at `time` seconds."""
        if self.position_before_seek is not None:  # the first frame after a seek
            self.allowed, self.position_before_seek = time >= self.position_before_seek, None
        if is_keyframe:
            if self.last_keyframe is not None and time > self.last_keyframe:
                gap = time - self.last_keyframe
                self.keyframe_interval = (
                    gap if self.keyframe_interval is None else max(self.keyframe_interval, gap)
                )
            self.last_keyframe = time

    def should_seek(self, row: int, target: float, time: float) -> bool:
        """Whether to seek for wanted time number `row` (`target` seconds) from a frame at `time` seconds."""
        if not (self.allowed and row > self.seeked_row and self.keyframe_interval is not None):
            return False
        if target - time <= SEEK_MIN_KEYFRAME_INTERVALS * self.keyframe_interval:
            return False
        # Keyframe gaps across a seek are not keyframe intervals.
        self.seeked_row, self.position_before_seek, self.last_keyframe = row, time, None
        return True


class VideoReader(VideoHeader):
    """The first video stream of a media file (path, file object or bytes), read with PyAV.

    Opening reads the container header only (`VideoHeader`, whose attributes it has), so the stream's geometry and
    timeline are known before any frame is decoded; the methods below decode. Times are seconds from the stream's
    first frame. Use it as a context manager, or call `close()`.
    """

    def __init__(self, source: str | os.PathLike | bytes | Any, max_pixels: int | None = None) -> None:
        super().__init__(source, max_pixels)
        self._reformatter = VideoReformatter()  # reused: it caches libswscale's context across frames
        self._last_time = 0.0  # time of the last decoded frame, for frames without a timestamp and for errors
        self._decoded_any = False

    # -- decoding ------------------------------------------------------------------------------------------

    def fixed_fps_times(self, fps: float) -> list[float]:
        """The times `k / fps` of the stream transcoded to `fps`: `num_fixed_fps_targets(duration, fps)` of them."""
        return [k / fps for k in range(num_fixed_fps_targets(self.duration, fps))]

    def frames(self) -> Iterator[av.VideoFrame]:
        """Every decoded frame, in presentation order."""
        for frame, _ in self._decode():
            yield frame

    def frames_at(self, times: Sequence[float], progress: bool = False) -> Iterator[av.VideoFrame]:
        """For every time in `times` (seconds, ascending), the frame on screen then: the last frame whose timestamp
        is not later. A frame stays on screen until the next one, so a frame is yielded again (the same object) for
        every time it covers; times after the last frame get the last frame, unless they lie beyond what the
        header promised (a truncated file). Decoding seeks across long gaps between times.

        With `progress=True`, a progress bar shows the decoded seconds.
        """
        targets = list(times)
        if not targets:
            return
        row = 0  # next time to serve
        shown = None  # (frame, time) of the last decoded frame not after targets[row]: the one on screen
        seeks, seek_to = _SeekPolicy(), None
        total, reported = math.ceil(self.duration), 0  # progress in whole seconds
        with self._progress_bar(progress, total) as bar:
            while True:
                start, seek_to = seek_to, None
                for frame, time in self._decode(start):
                    seeks.observe(time, frame.key_frame)
                    while row < len(targets) and time > targets[row] + _TIME_EPSILON:
                        yield shown[0] if shown is not None else frame  # the first frame covers earlier times
                        row += 1
                    if bar is not None and min(total, int(time)) > reported:
                        bar.update(min(total, int(time)) - reported)
                        reported = min(total, int(time))
                    if row == len(targets):
                        return
                    shown = (frame, time)
                    if seeks.should_seek(row, targets[row], time):
                        shown, seek_to = None, targets[row]
                        break
                if seek_to is None:  # the stream ended
                    break
        yield from self._hold_last_frame(shown, targets[row:])

    def _decode(self, seek_to: float | None = None) -> Iterator[tuple[av.VideoFrame, float]]:
        """Decoded frames with their time, from the start or from the keyframe before `seek_to` seconds."""
        stream = self.stream
        try:
            if seek_to is not None:
                self.container.seek(
                    int(((self.origin or 0.0) + seek_to) / self.time_base), backward=True, stream=stream
                )
            for frame in self.container.decode(stream):
                yield frame, self._frame_time(frame)
        except av.FFmpegError as error:
            raise ValueError(
                f"video {self.name} is corrupt: decoding failed near {self._last_time:.2f}s ({error})"
            ) from error

    def _frame_time(self, frame: av.VideoFrame) -> float:
        """Seconds from the stream's start; a frame without a timestamp follows the previous one by a frame."""
        if frame.time is not None:
            if self.origin is None:
                self.origin = frame.time
            self._last_time = frame.time - self.origin
        elif self._decoded_any:
            self._last_time += self.frame_interval
        self._decoded_any = True
        return self._last_time

    def _hold_last_frame(
        self, shown: tuple[av.VideoFrame, float] | None, targets: list[float]
    ) -> Iterator[av.VideoFrame]:
        """The last frame, for the times after it: it stays on screen until the stream ends."""
        if shown is None:
            raise ValueError(f"video {self.name} has no decodable video frames")
        frame, time = shown
        end = time + (float(frame.duration * self.time_base) if frame.duration else self.frame_interval)
        if targets[-1] > end + TRUNCATION_TOLERANCE_SECONDS:
            raise ValueError(
                f"video {self.name} is truncated or corrupt: its header promises {self.duration:.2f}s of video "
                f"but its frames stop at {end:.2f}s"
            )
        for _ in targets:
            yield frame

    def _progress_bar(self, show: bool, total: int) -> Any:
        if not show:
            return nullcontext()
        return logging.tqdm(total=total, unit="s", desc=f"Decoding {self.label}", leave=False)

    def to_rgb(
        self,
        frame: av.VideoFrame,
        size: tuple[int, int] | None = None,
        resample: PILImageResampling | int = PILImageResampling.BICUBIC,
    ) -> np.ndarray:
        """A decoded frame as (H, W, 3) uint8 RGB as a player shows it (display rotation applied), resized to
        `size = (height, width)` in the same libswscale call when given (with the swscale filter closest to PIL's
        `resample`)."""
        quarter_turns = self.rotation // 90
        if size is not None and quarter_turns % 2:
            size = (size[1], size[0])  # resize in the coded orientation, then turn
        try:
            if size is None:
                array = frame.to_ndarray(format="rgb24")
            else:
                interpolation = _SWSCALE_INTERPOLATION.get(PILImageResampling(resample), "BICUBIC")
                converted = self._reformatter.reformat(
                    frame, format="rgb24", width=size[1], height=size[0], interpolation=interpolation
                )
                array = converted.to_ndarray()
        except av.FFmpegError as error:
            raise ValueError(
                f"video {self.name}: converting a frame at {frame.time}s failed ({error})"
            ) from error
        if quarter_turns:
            array = np.ascontiguousarray(np.rot90(array, k=quarter_turns))  # np.rot90 turns counter-clockwise
        return array


def read_video(
    source: str | os.PathLike | bytes | Any, fps: float | None = None
) -> tuple[np.ndarray, Fraction]:
    """Decode a video to `(T, H, W, 3)` uint8 RGB frames and the frame rate they are at.

    With `fps=None`, every frame, at the stream's `frame_rate`. With `fps`, the stream transcoded to `fps` on its
    timeline: the frame on screen at every `k / fps` over the stream's duration, exactly as the video processor
    samples it before accelerated playback.
    """
    with VideoReader(source) as reader:
        if fps is None:
            frames = [reader.to_rgb(frame) for frame in reader.frames()]
            rate = reader.frame_rate
        else:
            frames, last, rgb = [], None, None
            for frame in reader.frames_at(reader.fixed_fps_times(fps)):
                if frame is not last:  # a frame on screen at several times is converted once
                    rgb, last = reader.to_rgb(frame), frame
                frames.append(rgb)
            rate = Fraction(fps).limit_denominator(1001 * 1000)
    if not frames:
        raise ValueError(f"video {describe_input(source)} has no decodable video frames")
    return np.stack(frames), rate


# --------------------------------------------------------------------------------------------------------
# Videos: one writer
# --------------------------------------------------------------------------------------------------------


def write_video(
    frames: np.ndarray | Iterable[np.ndarray],
    path: str | os.PathLike,
    fps: float | Fraction,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 RGB frames to `path` at `fps` (yuv420p; an odd side loses its last pixel row or column).

    `frames` is a `(T, H, W, 3)` array or any iterable of `(H, W, 3)` frames, encoded as they come (a long video
    need not fit in memory). `options` go to the encoder (e.g. `{"crf": "12"}` for libx264). Returns the path.
    """
    if isinstance(frames, np.ndarray) and (
        frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8
    ):
        raise ValueError(
            f"frames must be (T, H, W, 3) uint8, got shape {frames.shape} and dtype {frames.dtype}"
        )
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"no frames to encode into {os.fspath(path)}")
    shape = _check_frame(np.asarray(first), None)
    height, width = shape[0] // 2 * 2, shape[1] // 2 * 2  # yuv420p needs even sides
    if height == 0 or width == 0:
        raise ValueError(f"frames of {shape[0]}x{shape[1]} pixels are too small to encode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in itertools.chain([first], iterator):
            frame = np.asarray(frame)
            _check_frame(frame, shape)
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _check_frame(frame: np.ndarray, shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """`ValueError` unless `frame` is (H, W, 3) uint8 and, when `shape` is given, of that shape."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8, got shape {frame.shape} and dtype {frame.dtype}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"frames must all have one size; got {frame.shape} after {shape}")
    return frame.shape


# --------------------------------------------------------------------------------------------------------
# Call options
# --------------------------------------------------------------------------------------------------------


def merge_call_options(processor: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Call kwargs over the processor's stored defaults, type-checked against its `valid_kwargs`."""
    valid = processor.valid_kwargs.__annotations__
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"{type(processor).__name__} got unexpected keyword arguments {unknown}")
    try:
        validate_typed_dict(processor.valid_kwargs, {k: v for k, v in kwargs.items() if v is not None})
    except StrictDataclassFieldValidationError as error:
        raise TypeError(f"{type(processor).__name__}: {error}") from error
    options = {key: getattr(processor, key, None) for key in valid}
    options.update({k: v for k, v in kwargs.items() if v is not None})
    return options


def to_return_type(data: dict[str, Any], return_tensors: Any) -> dict[str, Any]:
    """Tensors stay torch tensors unless numpy is asked for."""
    if return_tensors is not None and str(getattr(return_tensors, "value", return_tensors)) == "np":
        return {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    return data


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_ASPECT_RATIO",
    "VideoReader",
    "array_to_rgb_image",
    "check_float_range",
    "check_image_size",
    "check_media_file",
    "describe_input",
    "load_rgb_image",
    "merge_call_options",
    "num_fixed_fps_targets",
    "open_image",
    "pil_to_rgb",
    "read_mp4_rotation",
    "read_video",
    "to_return_type",
    "validate_positive_ints",
    "write_video",
]
