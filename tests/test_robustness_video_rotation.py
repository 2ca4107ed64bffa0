"""Finding 2 of issue 18: a phone clip's display matrix is applied, so frames come out as a player shows them."""

import av
import numpy as np
import pytest

from transformers_mavors import MavorsVideoProcessor
from transformers_mavors.media_io import VideoReader, read_video

PATCH, F = 14, 4


def upright_portrait(height=112, width=56):
    """A portrait scene whose top half is red and bottom half blue: wrong if shown turned or upside down."""
    scene = np.zeros((height, width, 3), np.uint8)
    scene[: height // 2] = (255, 0, 0)
    scene[height // 2 :] = (0, 0, 255)
    return scene


def write_phone_clip(path, scene, degrees, num_frames=8, fps=8):
    """Store `scene` as a phone does: the pixels turned by `degrees` clockwise, and a display matrix that turns
    them back (`set_display_rotation` takes the counter-clockwise turn a player applies)."""
    coded = np.ascontiguousarray(np.rot90(scene, k=-(degrees // 90)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = coded.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees)
        for _ in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return coded


def assert_upright(frame):
    height = frame.shape[0]
    top, bottom = frame[: height // 4].reshape(-1, 3).mean(0), frame[-height // 4 :].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50, f"top quarter is not red: {top}"
    assert bottom[2] > 200 and bottom[0] < 50, f"bottom quarter is not blue: {bottom}"


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_read_video_applies_display_rotation(tmp_path, degrees):
    scene = upright_portrait()
    coded = write_phone_clip(tmp_path / "phone.mp4", scene, degrees)
    with av.open(str(tmp_path / "phone.mp4")) as container:  # FFmpeg's own reading of the display matrix
        assert next(container.decode(video=0)).rotation % 360 == degrees
    with VideoReader(tmp_path / "phone.mp4") as reader:
        assert reader.rotation == degrees
        assert (reader.coded_height, reader.coded_width) == coded.shape[:2]
        assert (reader.height, reader.width) == scene.shape[:2]
    frames, _ = read_video(tmp_path / "phone.mp4")
    assert frames.shape[1:3] == scene.shape[:2]  # portrait, as shot
    for frame in frames:
        assert_upright(frame)
    from_bytes, _ = read_video((tmp_path / "phone.mp4").read_bytes())
    assert np.array_equal(from_bytes, frames)


@pytest.mark.parametrize("degrees", [90, 270])
def test_video_processor_feeds_rotated_clip_portrait_and_upright(tmp_path, degrees):
    write_phone_clip(tmp_path / "phone.mp4", upright_portrait(), degrees)
    processor = MavorsVideoProcessor(
        image_size=56, patch_size=PATCH, frames_per_chunk=F, fps=8, do_rescale=False, do_normalize=False
    )
    out = processor(videos=[str(tmp_path / "phone.mp4")])
    chunks, grid_h, grid_w = out["video_grid_thw"][0].tolist()
    assert grid_h > grid_w  # portrait patch grid
    rows = out["pixel_values_videos"]
    blocks = rows.view(chunks, grid_h, grid_w, 3, F, PATCH, PATCH)
    frames = blocks.permute(0, 4, 1, 5, 2, 6, 3).reshape(chunks * F, grid_h * PATCH, grid_w * PATCH, 3)
    for frame in frames.numpy():
        assert_upright(frame)
