"""A video file's container header, read with PyAV without decoding a frame.

`VideoHeader` opens a media file (path, file object or bytes) and knows its first video stream's geometry and
timeline: duration, frame rate, coded and displayed size, sample aspect ratio and the display rotation phones write
into MP4/QuickTime track headers (read from the file's boxes here, because PyAV exposes it only on decoded frames).
`transformers_mavors.media_io.VideoReader` adds decoding on top of it; `mavors inspect` uses it alone.

Logging is the standard library's here (transformers' logging would import transformers); the records reach the
same handlers.
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from fractions import Fraction
from typing import Any

import av

from .sampling import check_image_size

logger = logging.getLogger(__name__)


def describe_source(value: Any) -> str:
    """A short human name of a path, file object or other input, for error messages."""
    if isinstance(value, (str, os.PathLike)):
        return f"'{os.fspath(value)}'"
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return f"file object '{name}'"
    return type(value).__name__


def check_media_file(path: str | os.PathLike, kind: str, name: str) -> None:
    """Refuse a missing, directory or empty `kind` ("image" / "video") file before opening it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{kind} file {name} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{kind} path {name} is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{kind} file {name} is empty (0 bytes)")


class VideoHeader:
    """The first video stream of a media file (path, file object or bytes), as its container header describes it.

    Opening reads the container header only (plus the packet timestamps when the header has no duration). Times are
    seconds from the stream's first frame. Use it as a context manager, or call `close()`.

    Attributes:
        name: the input, as error messages name it; label: its file name (for progress bars).
        width, height: frame size in pixels as shown (after the display rotation); coded_width, coded_height: as
            stored; display_width: width after the sample aspect ratio; rotation: the display matrix's
            counter-clockwise turn in degrees (0, 90, 180, 270).
        duration: length of the stream in seconds (from the header, or its packets).
        source_fps: the stream's average frame rate, or `None` when the file does not say.
        frame_rate: `Fraction` frame rate to re-encode at: the average rate, else FFmpeg's guess, else 25.
        origin: the stream's start time in seconds, when known; time_base: its timestamp unit.
    """

    def __init__(self, source: str | os.PathLike | bytes | Any, max_pixels: int | None = None) -> None:
        self.name = describe_source(source)
        path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
        self.label = os.path.basename(path) if isinstance(path, str) else "video"
        if isinstance(source, (str, os.PathLike)):
            check_media_file(source, "video", self.name)
        self._source = source
        self.container = self._open(source)
        try:
            self._read_header(max_pixels)
        except BaseException:
            self.container.close()
            raise

    def _open(self, source: Any) -> Any:
        if isinstance(source, bytes):
            if not source:
                raise ValueError("video bytes are empty (0 bytes)")
            source = io.BytesIO(source)
        try:
            return av.open(os.fspath(source) if isinstance(source, os.PathLike) else source)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"video file {self.name} does not exist") from error
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise ValueError(
                f"video {self.name} cannot be opened: not a readable or complete media file ({error})"
            ) from error

    def _read_header(self, max_pixels: int | None) -> None:
        container, name = self.container, self.name
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise ValueError(f"video {name} has no video stream (its streams: {', '.join(kinds)})")
        self.stream = stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads; set before the codec opens at the first decode
        codec = stream.codec_context
        self.coded_width, self.coded_height = codec.width, codec.height
        if max_pixels is not None:
            check_image_size(self.coded_width, self.coded_height, max_pixels, f"video {name}")
        aspect = stream.sample_aspect_ratio or codec.sample_aspect_ratio
        self._sample_aspect = float(aspect) if aspect and float(aspect) > 0 else 1.0
        self.time_base = stream.time_base
        self.source_fps = float(stream.average_rate) if stream.average_rate else None
        self.frame_rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(25))
        self.frame_interval = 1.0 / self.source_fps if self.source_fps else 0.0
        try:
            if stream.duration and stream.duration > 0:
                start = stream.start_time
                self.origin = float(start * self.time_base) if start is not None else None
                self.duration = float(stream.duration * self.time_base)
            else:
                self.origin, self.duration = self._scan_timeline()
        except av.FFmpegError as error:
            raise ValueError(f"video {name} is corrupt: reading its packets failed ({error})") from error
        if self.duration <= 0:
            raise ValueError(f"video {name} has no decodable video frames")
        self.rotation = self._display_rotation()
        if self.rotation in (90, 270):  # a phone's portrait clip: landscape pixels shown turned by a quarter
            self.width, self.height = self.coded_height, self.coded_width
            self.display_width = self.width / self._sample_aspect
        else:
            self.width, self.height = self.coded_width, self.coded_height
            self.display_width = self.width * self._sample_aspect

    def _display_rotation(self) -> int:
        """The counter-clockwise turn in degrees (0, 90, 180, 270) a player applies to the frames: the display
        matrix of an MP4/QuickTime video track, which is how phones mark portrait clips. Read from the file's
        boxes (PyAV reads stream side data only off decoded frames, and opening must not decode)."""
        if "mp4" not in self.container.format.name and "mov" not in self.container.format.name:
            return 0
        try:
            rotation = read_mp4_rotation(self._source)
        except (OSError, ValueError) as error:
            logger.warning(
                "video %s: its display matrix cannot be read (%s); it is read unrotated", self.name, error
            )
            return 0
        if rotation not in (0, 90, 180, 270):
            logger.warning(
                "video %s has a display rotation of %d degrees; it is read unrotated", self.name, rotation
            )
            return 0
        return rotation

    def _scan_timeline(self) -> tuple[float | None, float]:
        """`(start, duration)` of a stream whose header has no duration, from its packets (demux, no decode)."""
        first = end = None
        for packet in self.container.demux(self.stream):
            if packet.pts is None:
                continue
            first = packet.pts if first is None else min(first, packet.pts)
            packet_end = packet.pts + (packet.duration or 0)
            end = packet_end if end is None else max(end, packet_end)
        self.container.seek(0)
        if first is None:
            return None, 0.0
        return float(first * self.time_base), float((end - first) * self.time_base)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoHeader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _iter_boxes(file: Any, end: int):
    """`(type, payload start, payload end)` of the ISO-BMFF boxes from the file's position up to `end`."""
    position = file.tell()
    while position + 8 <= end:
        file.seek(position)
        size, kind = struct.unpack(">I4s", file.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", file.read(8))[0], 16
        elif size == 0:
            size = end - position
        if size < header:
            raise ValueError(f"malformed box {kind!r} at byte {position}")
        yield kind, position + header, min(position + size, end)
        position += size


def _track_rotation(file: Any, start: int, end: int) -> tuple[bool, int]:
    """`(is a video track, counter-clockwise rotation)` of one `trak` box."""
    is_video, rotation = False, 0
    file.seek(start)
    for kind, payload, box_end in list(_iter_boxes(file, end)):
        if kind == b"tkhd":
            file.seek(payload)
            version = file.read(1)[0]
            file.seek(payload + 4 + (32 if version == 1 else 20) + 16)  # to the matrix (ISO 14496-12 8.3.2)
            a, b = struct.unpack(">ii", file.read(8))
            # FFmpeg's av_display_rotation_get: the matrix turns the picture clockwise by atan2(b, a).
            rotation = round(-math.degrees(math.atan2(b, a))) % 360
        elif kind == b"mdia":
            file.seek(payload)
            for inner, inner_payload, _ in list(_iter_boxes(file, box_end)):
                if inner == b"hdlr":
                    file.seek(inner_payload + 8)
                    is_video = file.read(4) == b"vide"
    return is_video, rotation


def read_mp4_rotation(source: str | os.PathLike | bytes | Any) -> int:
    """Display rotation (counter-clockwise degrees, in [0, 360)) of the first video track of an MP4/MOV file,
    the same angle `av.VideoFrame.rotation` reports for its decoded frames; 0 without one."""
    if isinstance(source, bytes):
        file, close, restore = io.BytesIO(source), False, None
    elif isinstance(source, (str, os.PathLike)):
        file, close, restore = open(source, "rb"), True, None
    else:
        file, close, restore = source, False, source.tell()
    try:
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(0)
        for kind, payload, end in list(_iter_boxes(file, size)):
            if kind != b"moov":
                continue
            file.seek(payload)
            for inner, inner_payload, inner_end in list(_iter_boxes(file, end)):
                if inner == b"trak":
                    is_video, rotation = _track_rotation(file, inner_payload, inner_end)
                    if is_video:
                        return rotation
        return 0
    except struct.error as error:
        raise ValueError(f"truncated box ({error})") from error
    finally:
        if close:
            file.close()
        elif restore is not None:
            file.seek(restore)


__all__ = ["VideoHeader", "check_media_file", "describe_source", "read_mp4_rotation"]
