"""Synthetic scenes, datasets and the chunk-level needle-in-a-haystack evaluation (issue 6 infrastructure)."""

import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.cli import main as cli_main
from transformers_mavors.synthetic import CHANCE, TASKS, make_scene, write_synthetic_dataset
from transformers_mavors.synthetic.data import synthetic_config, synthetic_processor, synthetic_tokenizer
from transformers_mavors.synthetic.niah import (
    insert_needle,
    needle_index,
    plot_heatmap,
    read_frames,
    run_needle_in_haystack,
    score_answer,
)
from transformers_mavors.synthetic.scenes import COLOURS, FRAMES_PER_CHUNK, SIZE, haystack_frames
from transformers_mavors.synthetic.training import evaluate_synthetic, normalize_answer, train_synthetic


@pytest.fixture(scope="module")
def synthetic_tokenizer_():
    return synthetic_tokenizer()


def _chunk_colour_energy(frames: np.ndarray, colour: str) -> np.ndarray:
    """How close each frame is to being flooded with `colour` (0 = exactly)."""
    target = np.asarray(COLOURS[colour], dtype=np.float32)
    return np.abs(frames.astype(np.float32) - target).mean(axis=(1, 2, 3))


@pytest.mark.parametrize("task", TASKS)
def test_scenes_are_seeded_and_whole_chunks(task):
    first, again, other = make_scene(task, 3), make_scene(task, 3), make_scene(task, 4)
    assert np.array_equal(first.frames, again.frames) and first.answer == again.answer
    assert not np.array_equal(first.frames[: len(other.frames)], other.frames[: len(first.frames)])
    assert first.frames.shape[1:] == (SIZE, SIZE, 3) and first.frames.dtype == np.uint8
    assert len(first.frames) % FRAMES_PER_CHUNK == 0


BLIND_SCENES = 1000  # scenes drawn per task to measure the answer distribution (about 3 s for all five)


def best_blind_guess(task: str, scenes) -> float:
    """The accuracy of the best answer chosen without the part of the video the task asks about.

    For most tasks that is the most common answer. `order` asks which of the three colours shown comes first, so
    the guesser may know the colours shown (`CHANCE` says "one of the 3 shown"): the most common answer among the
    scenes that show the same three colours.
    """
    answers = defaultdict(Counter)
    for scene in scenes:
        answers[frozenset(scene.facts["colours"]) if task == "order" else None][scene.answer] += 1
    return sum(max(counts.values()) for counts in answers.values()) / len(scenes)


@pytest.mark.parametrize("task", TASKS)
def test_chance_is_the_best_guess_without_the_video(task):
    """`CHANCE[task]` (the learning docs' baseline) is what guessing scores on the drawn answers, within noise."""
    scenes = [make_scene(task, seed) for seed in range(BLIND_SCENES)]
    groups = 4 if task == "order" else 1  # order: scenes grouped by the 3 of 4 colours shown
    noise = 4 * math.sqrt(CHANCE[task] * (1 - CHANCE[task]) / (BLIND_SCENES / groups))
    assert abs(best_blind_guess(task, scenes) - CHANCE[task]) <= noise


def test_scene_answers_follow_what_is_drawn():
    # motion: the square's centre of mass moves the stated way inside every chunk
    scene = make_scene("motion", 11)
    dy, dx = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[scene.answer]
    colour = np.asarray(COLOURS[scene.facts["colour"]])
    for chunk in range(scene.num_chunks):
        frames = scene.frames[chunk * FRAMES_PER_CHUNK : (chunk + 1) * FRAMES_PER_CHUNK]
        centres = [np.argwhere((frame == colour).all(-1)).mean(0) for frame in frames]
        step = centres[-1] - centres[0]
        assert np.sign(step[0]) == dy and np.sign(step[1]) == dx
    # order: the answer's colour is drawn in an earlier chunk than the other two
    scene = make_scene("order", 5)
    first_chunk = {
        name: min(
            i // FRAMES_PER_CHUNK for i, f in enumerate(scene.frames) if (f == COLOURS[name]).all(-1).any()
        )
        for name in scene.facts["colours"]
    }
    assert min(first_chunk, key=first_chunk.get) == scene.answer
    # needle: the flooded frame sits at the stated chunk and frame
    scene = make_scene("needle", 2)
    energy = _chunk_colour_energy(scene.frames, scene.answer)
    assert int(energy.argmin()) == scene.facts["chunk"] * FRAMES_PER_CHUNK + scene.facts["frame"]
    with pytest.raises(ValueError, match="unknown synthetic task"):
        make_scene("juggling", 0)


def test_dataset_is_written_as_real_videos_with_disjoint_splits(tmp_path, synthetic_tokenizer_):
    splits = write_synthetic_dataset(tmp_path, 2, 1, tasks=("needle", "order"), progress=False)
    assert len(splits["train"]) == 4 and len(splits["heldout"]) == 2
    assert not {r["seed"] for r in splits["train"]} & {r["seed"] for r in splits["heldout"]}
    record = splits["heldout"][0]
    path = tmp_path / record["messages"][0]["content"][0]["path"]
    processor = synthetic_processor(synthetic_tokenizer_)
    out = processor.video_processor(str(path), return_tensors="pt")
    scene = make_scene(record["task"], record["seed"])
    assert out["video_grid_thw"].tolist() == [[scene.num_chunks, 4, 4]]
    # the file holds the scene: decoded frames are within H.264 noise of the drawn ones
    decoded = read_frames(path, fps=4)
    assert decoded.shape == scene.frames.shape
    assert np.abs(decoded.astype(int) - scene.frames.astype(int)).mean() < 4
    with pytest.raises(ValueError, match="unknown synthetic tasks"):
        write_synthetic_dataset(tmp_path, 1, 1, tasks=("nope",), progress=False)


@pytest.mark.parametrize("num_chunks, chunk, frame", [(2, 0, 0), (2, 1, 3), (8, 5, 2), (32, 31, 1)])
def test_needle_lands_where_the_processor_shows_it(synthetic_tokenizer_, num_chunks, chunk, frame):
    """The needle is inserted into the long haystack; after accelerated playback it is at (chunk, frame)."""
    processor = synthetic_processor(synthetic_tokenizer_)
    haystack = haystack_frames(np.random.default_rng(0), 2 * 32 * FRAMES_PER_CHUNK)
    video = insert_needle(haystack, "green", num_chunks, chunk, frame, FRAMES_PER_CHUNK)
    out = processor.video_processor(video, max_chunks=num_chunks, return_tensors="pt", do_normalize=False)
    assert out["video_grid_thw"].tolist() == [[num_chunks, 4, 4]]
    # rows are (chunk, patch) with values laid out (C, F, p, p): the green channel per chunk and frame
    pixels = out["pixel_values_videos"].view(num_chunks, 16, 3, FRAMES_PER_CHUNK, 14, 14)
    green_minus_red = (pixels[:, :, 1] - pixels[:, :, 0]).mean(dim=(1, 3, 4))  # (chunks, frames)
    assert divmod(int(green_minus_red.argmax()), FRAMES_PER_CHUNK) == (chunk, frame)
    assert green_minus_red.max() > 0.5 and (green_minus_red.flatten().sort().values[-2] < 0.1)


def test_needle_errors_name_the_problem():
    haystack = haystack_frames(np.random.default_rng(0), 16)
    with pytest.raises(ValueError, match="cannot fill 8 chunks"):
        needle_index(16, 8, 0, 0, FRAMES_PER_CHUNK)
    with pytest.raises(ValueError, match="outside the video's 4 chunks"):
        insert_needle(haystack, "red", 4, 4, 0, FRAMES_PER_CHUNK)
    with pytest.raises(ValueError, match="outside a chunk"):
        insert_needle(haystack, "red", 4, 0, 4, FRAMES_PER_CHUNK)
    with pytest.raises(ValueError, match="unknown needle colour"):
        insert_needle(haystack, "mauve", 4, 0, 0, FRAMES_PER_CHUNK)


def test_answer_scoring():
    assert score_answer("red", "red") and score_answer("The flash is Red.", "red")
    assert not score_answer("red or blue", "red") and not score_answer("reddish", "red")
    assert normalize_answer(" Left. ") == "left"


def test_niah_runs_on_any_checkpoint_and_the_cli_writes_results(tmp_path, synthetic_tokenizer_):
    torch.manual_seed(0)
    model = MavorsForConditionalGeneration(synthetic_config(synthetic_tokenizer_)).eval()
    processor = synthetic_processor(synthetic_tokenizer_)
    result = run_needle_in_haystack(
        model,
        processor,
        chunk_counts=(2, 3),
        colours=("red", "blue"),
        frames=(0,),
        max_new_tokens=2,
        progress=False,
    )
    assert sorted(result.accuracy) == [2, 3] and [len(v) for v in result.accuracy.values()] == [2, 3]
    assert result.trials == 2 and len(result.answers) == (2 + 3) * 2
    for answer in result.answers:  # every cell's score is the scoring of its answers
        assert answer["right"] == score_answer(answer["answer"], answer["colour"])
    assert plot_heatmap(result, tmp_path / "heat.png").stat().st_size > 1000

    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    args = [
        "niah",
        "--model",
        str(tmp_path / "ckpt"),
        "--chunks",
        "2",
        "--frames",
        "1",
        "--json",
        str(tmp_path / "r.json"),
    ]
    assert cli_main(args) == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["chunk_counts"] == [2] and saved["trials_per_cell"] == len(COLOURS)
    assert len(saved["accuracy"]["2"]) == 2


def answer_alone(model, processor, record: dict, media_root, **generate_kwargs) -> tuple[list[int], str]:
    """One held-out record answered by `model.generate` on its own (no batch, no padding): new ids and text."""
    video, question = record["messages"][0]["content"]
    chat = [
        {"role": "user", "content": [{"type": "video", "path": str(media_root / video["path"])}, question]}
    ]
    inputs = processor.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    output = model.generate(**inputs, max_new_tokens=24, do_sample=False, **generate_kwargs)
    new = output[0, inputs["input_ids"].shape[1] :]
    return new.tolist(), processor.decode(new, skip_special_tokens=True)


def test_training_path_runs_and_generation_stops_at_im_end(tmp_path):
    run = train_synthetic(
        tmp_path,
        tasks=("needle",),
        train_per_task=4,
        heldout_per_task=4,
        max_steps=2,
        batch_size=2,
        warmup_steps=0,
        progress=False,
    )
    losses = [h["loss"] for h in run.log_history if "loss" in h]
    assert losses and all(np.isfinite(losses))
    data = tmp_path / "data"
    heldout = write_synthetic_dataset(data, 4, 4, tasks=("needle",), progress=False)[
        "heldout"
    ]  # files reused
    assert run.num_heldout == {"needle": len(heldout)}
    # the held-out score is the share of held-out answers that match, each generated here on its own
    answers = [answer_alone(run.model, run.processor, record, data)[1] for record in heldout]
    right = [
        normalize_answer(a) == normalize_answer(r["answer"]) for a, r in zip(answers, heldout, strict=True)
    ]
    assert run.accuracy["needle"] == sum(right) / len(heldout)
    # steered to say one record's colour and then <|im_end|>, generation must end there: every answer is then that
    # colour alone, and the scoring path counts exactly the records whose answer it is
    tokenizer = run.processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert run.model.generation_config.eos_token_id == im_end
    colour = heldout[0]["answer"]
    steer = [*tokenizer.encode(colour, add_special_tokens=False), im_end]
    run.model.generation_config.sequence_bias = {
        tuple(steer[: i + 1]): 100.0 * (i + 1) for i in range(len(steer))
    }
    assert answer_alone(run.model, run.processor, heldout[1], data) == (steer, colour)
    accuracy, _ = evaluate_synthetic(run.model, run.processor, heldout, data)
    assert accuracy["needle"] == sum(r["answer"] == colour for r in heldout) / len(heldout) > 0


@pytest.mark.slow
def test_a_short_training_run_beats_chance(tmp_path):
    """A smaller version of the demo recipe (two tasks, 400 steps, about 3 minutes) learns far above chance."""
    run = train_synthetic(
        tmp_path,
        tasks=("needle", "order"),
        train_per_task=400,
        heldout_per_task=64,
        max_steps=400,
        batch_size=16,
        progress=False,
    )
    for task in ("needle", "order"):
        assert run.num_heldout[task] == 64
        assert run.accuracy[task] >= CHANCE[task] + 0.3, (task, run.accuracy)


def test_repeat_must_name_trained_tasks_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="repeat"):
        train_synthetic(tmp_path, tasks=("needle",), repeat={"motion": 2}, progress=False)
    with pytest.raises(ValueError, match="repeat"):
        train_synthetic(tmp_path, tasks=("needle",), repeat={"needle": 0}, progress=False)
    assert not any(tmp_path.iterdir())
