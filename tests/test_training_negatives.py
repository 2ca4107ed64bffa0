"""The paper's captioning negatives (appendix A): four equal parts in shuffled order."""

import numpy as np
import pytest
import torch
from test_training_fixtures import one_torch_thread  # noqa: F401 (autouse fixture)

from transformers_mavors.testing_utils import write_sample_video
from transformers_mavors.training import (
    build_video_caption_pairs,
    load_mavors_dataset,
    quarter_order,
    shuffle_quarters,
    write_jsonl,
    write_shuffled_quarters,
)
from transformers_mavors.training.negatives import read_video_frames


def test_quarter_order_is_a_permutation_that_never_keeps_the_original_order():
    orders = {tuple(quarter_order(seed)) for seed in range(200)}
    assert (0, 1, 2, 3) not in orders
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(orders) == 23  # every other permutation of four parts shows up


@pytest.mark.parametrize("kind", ["numpy", "torch", "list"])
def test_shuffle_quarters_concatenates_equal_parts_in_the_given_order(kind):
    frames = np.arange(18)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.int64)  # frame i holds i
    frames = {"numpy": frames, "torch": torch.from_numpy(frames), "list": list(frames)}[kind]
    shuffled, order = shuffle_quarters(frames, order=[2, 0, 3, 1])
    values = [int(np.asarray(f).flat[0]) for f in shuffled]
    # 18 frames -> four parts of 4; the last 2 frames are dropped so the parts are equal
    assert values == [8, 9, 10, 11, 0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7]
    assert order == [2, 0, 3, 1]
    assert type(shuffled) is type(frames)


def test_shuffle_quarters_rejects_too_short_videos_and_bad_orders():
    with pytest.raises(ValueError, match="at least 4 frames"):
        shuffle_quarters(np.zeros((3, 2, 2, 3)))
    with pytest.raises(ValueError, match="permutation"):
        shuffle_quarters(np.zeros((8, 2, 2, 3)), order=[0, 0, 1, 2])


def _square_x(frame: np.ndarray) -> float:
    red = (frame[..., 0].astype(int) - frame[..., 1].astype(int)) > 100
    return float(np.nonzero(red)[1].mean())


def test_shuffled_video_file_plays_the_quarters_in_the_new_order(tmp_path):
    # a square crossing the frame from left to right
    source = write_sample_video(tmp_path / "clip.mp4", num_frames=32, fps=8)
    order = write_shuffled_quarters(source, tmp_path / "shuffled.mp4", order=[3, 1, 0, 2])
    original, original_fps = read_video_frames(source)
    shuffled, shuffled_fps = read_video_frames(tmp_path / "shuffled.mp4")
    assert order == [3, 1, 0, 2] and len(shuffled) == 32 and shuffled_fps == original_fps
    x_original = [_square_x(f) for f in original]
    x_shuffled = [_square_x(f) for f in shuffled]
    expected = [x_original[q * 8 + i] for q in order for i in range(8)]
    assert np.allclose(x_shuffled, expected, atol=1.5)  # lossy codec: the square is where it should be
    assert not np.allclose(x_shuffled, x_original, atol=1.5)


def test_build_video_caption_pairs_makes_loadable_preference_records(tmp_path):
    (tmp_path / "media").mkdir()
    for name in ("a", "b"):
        write_sample_video(tmp_path / "media" / f"{name}.mp4", num_frames=16, seed=ord(name))
    calls = []

    def caption_fn(path: str) -> str:
        calls.append(path)
        return "shuffled caption" if "shuffled" in path else "original caption"

    records = build_video_caption_pairs(
        ["a.mp4", "b.mp4"],
        caption_fn,
        tmp_path / "media" / "negatives",
        media_root=tmp_path / "media",
        seed=1,
    )
    assert [r["chosen"][0]["content"] for r in records] == ["original caption"] * 2
    assert [r["rejected"][0]["content"] for r in records] == ["shuffled caption"] * 2
    assert records[0]["prompt"][0]["content"][0] == {"type": "video", "path": "a.mp4"}
    assert records[0]["rejected_video"].startswith("negatives/")  # relative to the media root
    assert all(r["quarter_order"] != [0, 1, 2, 3] for r in records)
    assert len(calls) == 4
    dataset = load_mavors_dataset(
        write_jsonl(records, tmp_path / "pairs.jsonl"), media_root=tmp_path / "media", check_media_exist=True
    )
    assert len(dataset) == 2 and {"prompt", "chosen", "rejected", "images"} <= set(dataset.column_names)
