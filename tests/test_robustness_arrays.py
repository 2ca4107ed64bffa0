"""Finding 5 of issue 18: float pixels outside [0, 1] and `None` items are typed errors, not silent changes."""

import numpy as np
import PIL.Image
import pytest
import torch

from transformers_mavors import MavorsImageProcessor, MavorsVideoProcessor


def image_processor():
    return MavorsImageProcessor(image_size=56, patch_size=14)


def video_processor():
    return MavorsVideoProcessor(image_size=56, patch_size=14, frames_per_chunk=4, fps=8)


def float_frames(fill):
    frames = np.full((4, 56, 56, 3), 0.5, np.float32)
    frames[1, 3, 3, 0] = fill
    return frames


BAD_FLOATS = [
    pytest.param(
        np.linspace(0, 200, 56 * 56 * 3, dtype=np.float32).reshape(56, 56, 3),
        r"\[0, 200\].*divide by 255",
        id="0-255 float",
    ),
    pytest.param(np.full((56, 56, 3), -0.5, np.float64), r"\[-0.5, -0.5\]", id="negative"),
    pytest.param(np.where(np.eye(56, dtype=bool)[..., None], np.nan, 0.5), "NaN", id="nan"),
    pytest.param(np.where(np.eye(56, dtype=bool)[..., None], np.inf, 0.5), "inf", id="inf"),
    pytest.param(torch.full((3, 56, 56), 255.0), r"\[255, 255\]", id="torch 0-255"),
]


@pytest.mark.parametrize("array, message", BAD_FLOATS)
def test_float_image_outside_unit_range_is_a_value_error(array, message):
    with pytest.raises(ValueError, match=message):
        image_processor()(images=[array])


@pytest.mark.parametrize(
    "fill, message",
    [(255.0, r"frame 1 .*\[0\.5, 255\]"), (-1.0, r"frame 1 .*\[-1, 0\.5\]"), (np.nan, "frame 1 .*NaN")],
)
def test_float_video_outside_unit_range_is_a_value_error(fill, message):
    with pytest.raises(ValueError, match=message):
        video_processor()(videos=[float_frames(fill)])


def test_float_pixels_in_unit_range_match_uint8():
    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 56, 3)).astype(np.uint8)
    as_uint8 = video_processor()(videos=[frames])["pixel_values_videos"]
    as_float = video_processor()(videos=[frames.astype(np.float32) / 255.0])["pixel_values_videos"]
    torch.testing.assert_close(as_float, as_uint8)


IMAGE = PIL.Image.new("RGB", (56, 56), (10, 20, 30))


@pytest.mark.parametrize(
    "images, message",
    [
        ([IMAGE, None], r"images\[1\] is None"),
        ([None, IMAGE], r"images\[0\] is None"),
        ([[IMAGE], [IMAGE, None]], r"images\[1\]\[1\] is None"),
    ],
)
def test_none_inside_an_image_list_names_its_index(images, message):
    with pytest.raises(ValueError, match=message):
        image_processor()(images=images)


@pytest.mark.parametrize(
    "videos, message",
    [
        ([IMAGE, None, IMAGE], r"frame 1 of the frame list videos is None"),
        ([[IMAGE] * 4, None], r"videos\[1\] is None"),
        ([[IMAGE] * 4, [IMAGE, IMAGE, None]], r"frame 2 of the frame list videos\[1\] is None"),
    ],
)
def test_none_inside_a_video_list_names_its_index(videos, message):
    with pytest.raises(ValueError, match=message):
        video_processor()(videos=videos)
