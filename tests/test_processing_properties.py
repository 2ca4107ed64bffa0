"""Property-based checks of both processors (hypothesis): random sizes, aspect ratios, frame counts and fps.

For every input either a typed error (`ValueError` / `TypeError`) is raised exactly when the input is invalid,
or the output honours the SPEC §7 contract: even patch grids, packed rows matching the grids, placeholder
tokens equal to the model's token count, and chunk positions strictly increasing from 0.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from transformers_mavors import num_visual_tokens
from transformers_mavors.image_processing_mavors import MAX_ASPECT_RATIO
from transformers_mavors.processing_mavors import IMAGE_TOKEN, VIDEO_TOKEN
from transformers_mavors.testing_utils import tiny_processor, write_sample_video

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible, CI is not flaky
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def check_contract(processor, out, image_count: int, video_count: int, frames_per_chunk: int = 4) -> None:
    """Assertions every successful processor output must satisfy."""
    ids = out["input_ids"][0]
    if image_count:
        grids = out["image_grid_thw"].tolist()
        assert all(h % 2 == 0 and w % 2 == 0 and t == 1 for t, h, w in grids)
        assert out["pixel_values"].shape == (sum(h * w for _, h, w in grids), 3 * 14 * 14)
        assert ids.count(processor.image_token_id) == sum(num_visual_tokens(g) for g in grids)
    if video_count:
        grids = out["video_grid_thw"].tolist()
        assert len(grids) == video_count
        assert all(h % 2 == 0 and w % 2 == 0 and t >= 1 for t, h, w in grids)
        assert out["pixel_values_videos"].shape == (
            sum(t * h * w for t, h, w in grids),
            3 * frames_per_chunk * 14 * 14,
        )
        assert ids.count(processor.video_token_id) == sum(num_visual_tokens(g) for g in grids)
        positions = out["video_chunk_positions"].tolist()
        assert len(positions) == sum(t for t, _, _ in grids)
        start = 0
        for t, _, _ in grids:
            own = positions[start : start + t]
            assert own[0] == 0 and all(b > a for a, b in zip(own, own[1:], strict=False))
            start += t


@PROPERTY_SETTINGS
@given(
    width=st.integers(0, 400),
    height=st.integers(0, 400),
    stretch=st.sampled_from([1, 1, 1, 150, 250]),
    max_slices=st.integers(1, 9),
)
def test_random_images_give_a_typed_error_or_a_valid_layout(processor, width, height, stretch, max_slices):
    width = min(width * stretch, 20_000)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    invalid = width == 0 or height == 0 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO
    try:
        out = processor(text=f"x{IMAGE_TOKEN}", images=image, max_slices=max_slices)
    except (ValueError, TypeError):
        assert invalid
        return
    assert not invalid
    check_contract(processor, out, image_count=1, video_count=0)
    assert len(out["image_grid_thw"]) <= 1 + max_slices


@PROPERTY_SETTINGS
@given(
    num_frames=st.integers(0, 40),
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    fps=st.one_of(st.floats(0.25, 30), st.sampled_from([0.0, -1.0, math.nan])),
    source_fps=st.one_of(st.none(), st.floats(0.5, 30)),
    frames_per_chunk=st.integers(1, 5),
    max_chunks=st.integers(1, 6),
)
def test_random_frame_arrays_give_a_typed_error_or_valid_chunks(
    processor, num_frames, height, width, fps, source_fps, frames_per_chunk, max_chunks
):
    frames = np.random.default_rng(num_frames).integers(
        0, 256, (num_frames, height, width, 3), dtype=np.uint8
    )
    invalid = not (fps > 0) or num_frames == 0
    kwargs = dict(fps=fps, frames_per_chunk=frames_per_chunk, max_chunks=max_chunks, return_metadata=True)
    if source_fps is not None:
        kwargs["video_metadata"] = {"fps": source_fps}
    try:
        out = processor(text=f"{VIDEO_TOKEN}!", videos=[frames], **kwargs)
    except (ValueError, TypeError):
        assert invalid
        return
    assert not invalid
    check_contract(processor, out, image_count=0, video_count=1, frames_per_chunk=frames_per_chunk)
    chunks = out["video_grid_thw"][0, 0].item()
    metadata = out["video_metadata"][0]
    assert chunks == math.ceil(metadata.num_frames / frames_per_chunk) <= max_chunks
    expected_targets = (
        num_frames if source_fps is None else max(1, math.ceil(num_frames / source_fps * fps - 1e-6))
    )
    assert metadata.num_frames == min(expected_targets, max_chunks * frames_per_chunk)
    # positions come from original-timeline timestamps: floor(t_first * fps / F)
    assert out["video_chunk_positions"].tolist() == [
        math.floor(start * fps / frames_per_chunk + 1e-9) for start, _ in metadata.chunk_timestamps
    ]


@pytest.fixture(scope="module")
def video_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        (frames, fps): write_sample_video(
            folder / f"{frames}_{fps}.mp4", num_frames=frames, height=32, width=48, fps=fps
        )
        for frames in (1, 7, 30)
        for fps in (5, 24)
    }


@settings(PROPERTY_SETTINGS, max_examples=25)
@given(
    key=st.sampled_from([(frames, fps) for frames in (1, 7, 30) for fps in (5, 24)]),
    fps=st.floats(0.5, 40),
    max_chunks=st.integers(1, 4),
)
def test_random_files_and_fps_give_valid_chunks_on_the_file_timeline(
    processor, video_files, key, fps, max_chunks
):
    num_frames, source_fps = key
    out = processor(
        text=VIDEO_TOKEN, videos=str(video_files[key]), fps=fps, max_chunks=max_chunks, return_metadata=True
    )
    check_contract(processor, out, image_count=0, video_count=1)
    metadata = out["video_metadata"][0]
    assert metadata.duration == pytest.approx(num_frames / source_fps)
    assert metadata.num_frames == min(math.ceil(metadata.duration * fps - 1e-6), max_chunks * 4)


@PROPERTY_SETTINGS
@given(
    image_sizes=st.lists(st.tuples(st.integers(1, 150), st.integers(1, 150)), min_size=0, max_size=3),
    video_lengths=st.lists(st.integers(1, 12), min_size=0, max_size=2),
    extra_markers=st.integers(-1, 1),
)
def test_marker_and_media_counts_must_agree(processor, image_sizes, video_lengths, extra_markers):
    assume(image_sizes or video_lengths)
    images = [np.zeros((h, w, 3), np.uint8) for h, w in image_sizes]
    videos = [np.zeros((t, 24, 24, 3), np.uint8) for t in video_lengths]
    markers = max(0, len(images) + extra_markers)
    text = "a " + IMAGE_TOKEN * markers + " b " + VIDEO_TOKEN * len(videos)
    # a prompt with no marker at all gets one image marker per image in front (the stock image-text-to-text call)
    markers_added = markers == 0 and images and not videos
    try:
        out = processor(text=text, images=images or None, videos=videos or None)
    except ValueError:
        assert markers != len(images) and not markers_added
        return
    assert markers == len(images) or markers_added
    check_contract(processor, out, image_count=len(images), video_count=len(videos))
