"""MavorsVideoProcessor: PyAV decoding, fixed-fps sampling, chunking, accelerated playback (SPEC §3.3, §7)."""

import io
import math
from fractions import Fraction

import av
import numpy as np
import PIL.Image
import pytest
import torch
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

import transformers_mavors.media_io as media_io
from transformers_mavors import MavorsVideoProcessor
from transformers_mavors.testing_utils import write_sample_video

PATCH, F = 14, 4


def make_processor(**kwargs):
    options = dict(image_size=56, patch_size=PATCH, frames_per_chunk=F, fps=8)
    options.update(kwargs)
    return MavorsVideoProcessor(**options)


def unpack(out, video=0, frames_per_chunk=F):
    """Inverse of the packing: the (chunks * F, H, W, 3) frames of one video (values as processed)."""
    grids = out["video_grid_thw"].tolist()
    start = sum(t * h * w for t, h, w in grids[:video])
    chunks, h, w = grids[video]
    rows = out["pixel_values_videos"][start : start + chunks * h * w]
    blocks = rows.view(chunks, h, w, 3, frames_per_chunk, PATCH, PATCH)
    return blocks.permute(0, 4, 1, 5, 2, 6, 3).reshape(chunks * frames_per_chunk, h * PATCH, w * PATCH, 3)


def flat_frames(values, size=56):
    """Frames (T, size, size, 3) uint8, frame i filled with `values[i]`."""
    return np.stack([np.full((size, size, 3), v, dtype=np.uint8) for v in values])


RAW = {"do_rescale": False, "do_normalize": False}  # processed values stay 0-255, to compare with sources


def write_video(path, frames, fps=None, times_ms=None, codec="libx264", gop=None, options=None):
    """Encode frames; constant `fps`, or one timestamp per frame in milliseconds (variable frame rate)."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps) if fps else container.add_stream(codec)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if gop:
            stream.codec_context.gop_size = gop
            stream.options = {"keyint_min": str(gop), "sc_threshold": "0"}
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if times_ms is not None:
                video_frame.pts, video_frame.time_base = times_ms[index], Fraction(1, 1000)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip_5s(tmp_path_factory):
    """5 s at 30 fps, 128x96."""
    return write_sample_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=150, fps=30)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """120 s at 10 fps, 64x48, a keyframe every second; frame i has grey level (i * 37) % 256."""
    frames = np.repeat(((np.arange(1200) * 37) % 256).astype(np.uint8)[:, None, None, None], 3, axis=3)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (1200, 48, 64, 3)))
    return write_video(tmp_path_factory.mktemp("video") / "long.mp4", frames, fps=10, gop=10)


# --- sampling and chunking ---------------------------------------------------------------------------


def test_five_seconds_at_fps8_with_f4_gives_ten_chunks_at_positions_0_to_9(clip_5s):
    out = make_processor()(str(clip_5s), return_metadata=True)
    assert out["video_grid_thw"].tolist() == [[10, 4, 4]]
    assert out["video_chunk_positions"].tolist() == list(range(10))
    assert out["pixel_values_videos"].shape == (10 * 16, 3 * F * PATCH * PATCH)
    assert out["pixel_values_videos"].dtype == torch.float32
    metadata = out["video_metadata"][0]
    assert metadata.duration == pytest.approx(5.0)
    assert (metadata.num_frames, metadata.sampled_fps, metadata.playback_speed) == (40, 8.0, 1.0)
    assert metadata.frame_timestamps[:3] == [0.0, 0.125, 0.25]
    assert metadata.chunk_timestamps[1] == (0.5, 0.875)
    assert metadata.source_fps == 30.0


def test_accelerated_playback_keeps_original_timeline_positions(clip_5s):
    out = make_processor(max_chunks=3)(str(clip_5s), return_metadata=True)
    # 40 targets squeezed into 12 frames: kept targets 0, 3, 6, 10, 13, ...; chunks start at 0, 13, 26.
    assert out["video_grid_thw"].tolist() == [[3, 4, 4]]
    assert out["video_chunk_positions"].tolist() == [0 // F, 13 // F, 26 // F]
    metadata = out["video_metadata"][0]
    assert metadata.playback_speed == pytest.approx(40 / 12)
    assert [start for start, _ in metadata.chunk_timestamps] == [0.0, 13 / 8, 26 / 8]


def test_accelerated_playback_drops_frames_uniformly_from_arrays():
    frames = flat_frames(range(0, 200, 5))  # 40 frames taken as already at 8 fps
    out = make_processor(max_chunks=2)(frames, **RAW)
    kept = [j * 40 // 8 for j in range(8)]  # 0, 5, 10, ...
    assert unpack(out)[:, 0, 0, 0].tolist() == [5.0 * k for k in kept]
    assert out["video_chunk_positions"].tolist() == [0, kept[4] // F]


def test_arrays_are_taken_as_already_at_fps_and_the_last_chunk_repeats_its_last_frame():
    out = make_processor()(flat_frames(range(10, 110, 10)), return_metadata=True, **RAW)  # 10 frames
    assert out["video_grid_thw"].tolist() == [[3, 4, 4]]
    assert out["video_chunk_positions"].tolist() == [0, 1, 2]
    values = unpack(out)[:, 0, 0, 0].tolist()
    assert values == [10.0 * (i + 1) for i in range(10)] + [100.0, 100.0]  # padded with frame 9
    assert out["video_metadata"][0].duration == pytest.approx(10 / 8)


def test_source_fps_in_video_metadata_resamples_arrays_to_the_frame_on_screen():
    frames = flat_frames(range(0, 120, 10))  # 12 frames at 3 fps = 4 s
    out = make_processor()(frames, video_metadata={"fps": 3}, return_metadata=True, **RAW)
    # 32 targets at 8 fps; target k shows source frame floor(k * 3 / 8)
    expected = [10.0 * math.floor(k * 3 / 8) for k in range(32)]
    assert unpack(out)[:, 0, 0, 0].tolist() == expected
    assert out["video_chunk_positions"].tolist() == list(range(8))
    assert out["video_metadata"][0].source_fps == 3.0


def test_variable_frame_rate_file_is_sampled_on_its_timestamps(tmp_path):
    colours = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)])
    frames = np.stack([np.full((64, 64, 3), c, dtype=np.uint8) for c in colours])
    times_ms = [0, 100, 200, 1000, 1100, 2000]
    path = write_video(tmp_path / "vfr.mkv", frames, times_ms=times_ms)  # MKV: no stream duration header
    out = make_processor(fps=4)(str(path), return_metadata=True, **RAW)
    shown = unpack(out)[: out["video_metadata"][0].num_frames].mean(dim=(1, 2))  # (frames, 3)
    # targets 0, 0.25, ..., 2.0 s show the last frame whose timestamp is not later
    expected = [0, 2, 2, 2, 3, 4, 4, 4, 5]
    assert len(shown) == len(expected)
    assert torch.allclose(shown, torch.tensor(colours[expected], dtype=torch.float32), atol=12)


def test_seeking_gives_the_same_frames_as_decoding_through(long_clip, monkeypatch):
    seeks = []
    real_open = av.open

    class CountingContainer:
        def __init__(self, container):
            self._container = container

        def __getattr__(self, name):
            return getattr(self._container, name)

        def seek(self, *args, **kwargs):
            seeks.append(args)
            return self._container.seek(*args, **kwargs)

    monkeypatch.setattr(av, "open", lambda *a, **k: CountingContainer(real_open(*a, **k)))
    processor = make_processor(fps=10, max_chunks=3)  # 1200 targets -> 12 kept frames, 10 s apart
    with_seeks = processor(str(long_clip))
    assert len(seeks) >= 5  # a keyframe each second, kept frames 10 s apart: decoding skips ahead
    monkeypatch.setattr(media_io, "SEEK_MIN_KEYFRAME_INTERVALS", float("inf"))
    seeks.clear()
    through = processor(str(long_clip))
    assert seeks == []
    torch.testing.assert_close(
        with_seeks["pixel_values_videos"], through["pixel_values_videos"], atol=0, rtol=0
    )
    assert with_seeks["video_chunk_positions"].tolist() == [0, 400 // F, 800 // F]


def test_path_file_object_and_bytes_give_identical_output(clip_5s):
    processor = make_processor()
    by_path = processor(clip_5s)
    data = clip_5s.read_bytes()
    for source in (io.BytesIO(data), data, open(clip_5s, "rb")):  # noqa: SIM115
        other = processor(source)
        torch.testing.assert_close(
            other["pixel_values_videos"], by_path["pixel_values_videos"], atol=0, rtol=0
        )


def test_files_process_under_inference_mode(clip_5s):
    """Files are packed on a worker thread; inference mode is per thread, so the worker takes the caller's."""
    processor = make_processor()
    expected = processor(clip_5s)["pixel_values_videos"]
    with torch.inference_mode():
        packed = processor(clip_5s)["pixel_values_videos"]
    assert packed.is_inference()
    torch.testing.assert_close(packed, expected, atol=0, rtol=0)


def test_frame_lists_of_pil_images_and_tensors_match_arrays():
    frames = np.random.default_rng(0).integers(0, 256, (6, 40, 60, 3), dtype=np.uint8)
    processor = make_processor()
    reference = processor(frames)["pixel_values_videos"]
    for variant in (
        [PIL.Image.fromarray(frame) for frame in frames],
        torch.from_numpy(frames),
        list(frames),
    ):
        torch.testing.assert_close(processor(variant)["pixel_values_videos"], reference, atol=0, rtol=0)


def test_one_resolution_per_video_from_its_first_frame():
    frames = [PIL.Image.new("RGB", size, (9, 9, 9)) for size in ((112, 56), (40, 40), (300, 90))]
    out = make_processor()(frames)
    assert out["video_grid_thw"].tolist() == [[1, 2, 6]]  # 112x56 at R_v=56 -> 84x28 for all frames


def test_packing_is_chunk_major_row_major_with_channel_frame_row_column_values():
    frames = np.random.default_rng(2).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
    out = make_processor()(frames)
    normalized = (torch.from_numpy(frames).float() / 255 - 0.5) / 0.5  # (T, H, W, C)
    rows = out["pixel_values_videos"]
    for chunk in range(2):
        for row in range(16):
            y, x = divmod(row, 4)
            patch = normalized[chunk * F : (chunk + 1) * F, y * 14 : (y + 1) * 14, x * 14 : (x + 1) * 14]
            expected = patch.permute(3, 0, 1, 2).reshape(-1)  # (C, F, p, p)
            torch.testing.assert_close(rows[chunk * 16 + row], expected, atol=1e-6, rtol=0)


def test_batch_of_file_and_arrays_concatenates_videos_in_order(clip_5s):
    processor = make_processor()
    arrays = np.random.default_rng(3).integers(0, 256, (5, 30, 90, 3), dtype=np.uint8)
    batch = processor([[str(clip_5s)], [arrays]])
    alone = [processor(str(clip_5s)), processor(arrays)]
    assert batch["video_grid_thw"].tolist() == [o["video_grid_thw"][0].tolist() for o in alone]
    torch.testing.assert_close(
        batch["pixel_values_videos"], torch.cat([o["pixel_values_videos"] for o in alone])
    )
    assert batch["video_chunk_positions"].tolist() == sum(
        (o["video_chunk_positions"].tolist() for o in alone), []
    )


def test_num_frames_caps_the_kept_frames(clip_5s):
    out = make_processor()(str(clip_5s), num_frames=6, return_metadata=True)
    assert out["video_metadata"][0].num_frames == 6
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]


def test_progress_bar_only_for_videos_longer_than_a_minute(long_clip, clip_5s, capsys):
    processor = make_processor(max_chunks=2)
    processor(str(clip_5s))
    assert "Decoding" not in capsys.readouterr().err
    processor(str(long_clip))
    assert "Decoding long.mp4" in capsys.readouterr().err


# --- bad input ----------------------------------------------------------------------------------------------


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, clip_5s):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    data = clip_5s.read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end is lost
    faststart = write_video(
        folder / "faststart.mp4", flat_frames(range(0, 240, 3)), fps=8, options={"movflags": "faststart"}
    )
    data = faststart.read_bytes()
    (folder / "faststart_cut.mp4").write_bytes(
        data[: int(len(data) * 0.6)]
    )  # index says 10 s, data stops early
    _audio_only(folder / "audio.m4a")
    return folder


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("missing.mp4", FileNotFoundError, "does not exist"),
        ("empty.mp4", ValueError, "empty"),
        ("garbage.mp4", ValueError, "cannot be opened"),
        ("cut.mp4", ValueError, "cannot be opened"),
        ("faststart_cut.mp4", ValueError, "truncated"),
        ("audio.m4a", ValueError, "no video stream"),
    ],
)
def test_bad_files_raise_typed_errors_naming_the_file(bad_files, name, error, message):
    with pytest.raises(error, match=message) as info:
        make_processor()(str(bad_files / name))
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("video", "error", "message"),
    [
        (np.zeros((10, 10, 3), np.uint8), ValueError, "4 dimensions"),
        (np.zeros((0, 10, 10, 3), np.uint8), ValueError, "no frames"),
        (np.zeros((2, 1, 300, 3), np.uint8), ValueError, "aspect ratio"),
        (np.zeros((2, 0, 10, 3), np.uint8), ValueError, "zero size"),
        (np.zeros((2, 10, 10, 3), np.complex64), TypeError, "dtype"),
        (42, TypeError, "unsupported video input"),
    ],
)
def test_bad_arrays_raise_typed_errors(video, error, message):
    with pytest.raises(error, match=message):
        make_processor()(video)


def test_oversized_frames_are_refused_before_decoding(clip_5s):
    with pytest.raises(ValueError, match="max_image_pixels"):
        make_processor(max_image_pixels=1000)(str(clip_5s))


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf")])
def test_non_positive_or_non_finite_fps_is_a_value_error(clip_5s, fps):
    with pytest.raises(ValueError, match="fps"):
        make_processor()(str(clip_5s), fps=fps)
    with pytest.raises(ValueError, match="fps"):
        make_processor()(flat_frames([0, 1]), video_metadata={"fps": fps})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"frames_per_chunk": 0}, ValueError),
        ({"max_chunks": -2}, ValueError),
        ({"max_chunks": "many"}, TypeError),
    ],
)
def test_bad_options_raise_typed_errors(kwargs, error):
    with pytest.raises(error):
        make_processor()(flat_frames([0, 1]), **kwargs)


def test_a_missing_file_fails_the_batch_before_anything_is_decoded(clip_5s, monkeypatch):
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    with pytest.raises(FileNotFoundError):
        make_processor()([str(clip_5s), "/no/such/video.mp4"])
    assert opened == []


# --- save / load ------------------------------------------------------------------------------------------------


def test_save_and_auto_load_roundtrip(tmp_path):
    processor = make_processor(fps=3.5, max_chunks=7)
    processor.save_pretrained(tmp_path)
    loaded = AutoVideoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MavorsVideoProcessor
    assert (loaded.fps, loaded.max_chunks, loaded.frames_per_chunk, loaded.image_size) == (3.5, 7, F, 56)
    frames = flat_frames(range(0, 90, 10))
    torch.testing.assert_close(
        loaded(frames)["pixel_values_videos"], processor(frames)["pixel_values_videos"]
    )


# --- the shared reader and writer (media_io) -----------------------------------------------------------------


def reference_fixed_fps_frames(path, fps):
    """The fixed-fps reader NIAH had before `media_io.read_video` (decode everything, pick by timestamp)."""
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for decoded in container.decode(stream):
            if decoded.pts is None:
                continue
            times.append(float(decoded.pts * stream.time_base))
            frames.append(decoded.to_ndarray(format="rgb24"))
    order = np.argsort(times)
    times = np.asarray(times)[order] - min(times)
    duration = times[-1] + (times[-1] / max(1, len(times) - 1) if len(times) > 1 else 1 / fps)
    targets = np.arange(int(np.ceil(duration * fps - 1e-6))) / fps
    picks = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(times) - 1)
    return np.stack([frames[order[i]] for i in picks])


@pytest.mark.parametrize(
    ("num_frames", "source_fps", "fps"), [(32, 4, 4), (40, 8, 4), (150, 30, 4), (23, 5, 3), (9, 25, 7.5)]
)
def test_read_video_at_fps_gives_the_frames_the_former_niah_reader_gave(
    tmp_path, num_frames, source_fps, fps
):
    from transformers_mavors.synthetic.niah import read_frames

    path = write_sample_video(
        tmp_path / "clip.mp4", num_frames=num_frames, height=48, width=64, fps=source_fps
    )
    expected = reference_fixed_fps_frames(path, fps)
    frames, rate = media_io.read_video(path, fps)
    assert frames.shape == expected.shape and np.array_equal(frames, expected)
    assert np.array_equal(read_frames(path, fps), expected) and rate == Fraction(fps)


def test_read_video_without_fps_gives_every_frame_at_the_stream_rate(tmp_path):
    source = flat_frames(range(0, 250, 10), size=32)  # 25 frames, grey level 10 * i
    path = media_io.write_video(
        source, tmp_path / "sub" / "flat.mp4", fps=Fraction(30000, 1001), options={"crf": "0"}
    )
    frames, rate = media_io.read_video(path)
    assert rate == Fraction(30000, 1001) and frames.shape == (25, 32, 32, 3)
    assert np.abs(frames.astype(int) - source.astype(int)).max() <= 2  # crf 0 (lossless luma), yuv420p chroma
    with av.open(str(path)) as container:  # the stream as PyAV decodes it, frame by frame
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert np.array_equal(frames, decoded)


class NoDecodeContainer:
    """A PyAV container that refuses to decode: planning must come from the header alone."""

    def __init__(self, container):
        self._container = container

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, *args, **kwargs):
        raise AssertionError("a frame was decoded")


def test_reader_and_plan_video_read_only_the_header(clip_5s, monkeypatch):
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: NoDecodeContainer(real_open(*a, **k)))
    with media_io.VideoReader(clip_5s) as reader:
        assert (reader.width, reader.height, reader.duration, reader.source_fps) == (128, 96, 5.0, 30.0)
        assert reader.fixed_fps_times(8)[:3] == [0.0, 0.125, 0.25] and len(reader.fixed_fps_times(8)) == 40
    plan = make_processor(max_chunks=3).plan_video(str(clip_5s))
    assert plan["grid_thw"] == (3, 4, 4) and plan["chunk_positions"] == [0, 13 // F, 26 // F]


def test_writer_streams_frames_from_an_iterable(tmp_path):
    source = flat_frames(range(0, 200, 20), size=32)
    from_array = media_io.read_video(media_io.write_video(source, tmp_path / "array.mp4", fps=8))[0]
    from_generator = media_io.read_video(media_io.write_video(iter(source), tmp_path / "stream.mp4", fps=8))[
        0
    ]
    assert np.array_equal(from_array, from_generator) and len(from_array) == 10


def test_writer_refuses_frames_it_cannot_encode(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        media_io.write_video(np.zeros((2, 8, 8), np.uint8), tmp_path / "x.mp4", fps=4)
    with pytest.raises(ValueError, match="too small"):
        media_io.write_video(np.zeros((2, 1, 8, 3), np.uint8), tmp_path / "x.mp4", fps=4)
    with pytest.raises(ValueError, match="no frames"):
        media_io.write_video(iter([]), tmp_path / "x.mp4", fps=4)
    with pytest.raises(ValueError, match="one size"):
        media_io.write_video(
            [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], tmp_path / "x.mp4", 4
        )


def test_long_videos_decode_with_progress_bars_disabled(long_clip):
    from transformers.utils import logging

    logging.disable_progress_bar()
    try:
        out = make_processor(max_chunks=2)(str(long_clip))
    finally:
        logging.enable_progress_bar()
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]


# --- planning without pixels --------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_frames", "max_chunks"), [(10, 60), (40, 3), (1, 2)])
def test_plans_of_arrays_equal_their_processing(num_frames, max_chunks):
    processor = make_processor(max_chunks=max_chunks)
    frames = np.random.default_rng(num_frames).integers(0, 256, (num_frames, 40, 100, 3), dtype=np.uint8)
    out = processor(frames, return_metadata=True)
    for plan in (processor.plan_video(frames), processor.get_video_layout(num_frames, 40, 100)):
        assert list(plan["grid_thw"]) == out["video_grid_thw"][0].tolist()
        assert plan["chunk_positions"] == out["video_chunk_positions"].tolist()
        assert plan["metadata"] == out["video_metadata"][0]


def test_plan_of_a_file_equals_its_processing(clip_5s):
    processor = make_processor(max_chunks=3, fps=6)
    out = processor(str(clip_5s), return_metadata=True)
    plan = processor.plan_video(str(clip_5s))
    assert list(plan["grid_thw"]) == out["video_grid_thw"][0].tolist()
    assert plan["metadata"] == out["video_metadata"][0] and plan["metadata"].playback_speed > 1


def test_planning_refuses_bad_sizes_and_several_videos(clip_5s):
    processor = make_processor()
    with pytest.raises(ValueError, match="num_frames"):
        processor.get_video_layout(0, 40, 40)
    with pytest.raises(ValueError, match="aspect ratio"):
        processor.get_video_layout(4, 1, 300)
    with pytest.raises(ValueError, match="one video"):
        processor.plan_video([str(clip_5s), str(clip_5s)])
    with pytest.raises(FileNotFoundError):
        processor.plan_video("/no/such/video.mp4")
