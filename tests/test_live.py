"""Live video sessions: each chunk encoded once, answers equal to the offline pipeline's."""

import threading

import numpy as np
import pytest
import torch
from conftest import randomize_
from transformers import LogitsProcessor, LogitsProcessorList, TextIteratorStreamer, pipeline

from transformers_mavors import MavorsForConditionalGeneration, MavorsVideoSession
from transformers_mavors.live import AggregatorCache, run_chat
from transformers_mavors.testing_utils import (
    make_sample_frames,
    tiny_mavors_config,
    tiny_processor,
    write_sample_video,
)

F = 4  # frames per chunk of the tiny configs
FPS = 4.0
QUESTION = "What colour appears first?"
GREEDY = {"max_new_tokens": 6, "do_sample": False}


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return randomize_(MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)), std=0.1).eval()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return tiny_processor(tokenizer, fps=FPS, max_chunks=64)


@pytest.fixture(scope="module")
def pipe(model, processor):
    return pipeline("video-text-to-text", model=model, processor=processor)


class RecordScores(LogitsProcessor):
    """Keeps the raw next-token scores of every step (the first one: the prefill's last position)."""

    def __init__(self):
        self.scores = []

    def __call__(self, input_ids, scores):
        self.scores.append(scores.clone())
        return scores


def append_in_random_pieces(session, frames, seed=0):
    rng = np.random.default_rng(seed)
    start = 0
    while start < len(frames):
        size = int(rng.integers(1, 2 * F + 2))
        session.append(frames[start : start + size])
        start += size


def answer_with_scores(call, **kwargs):
    recorder = RecordScores()
    answer = call(logits_processor=LogitsProcessorList([recorder]), **GREEDY, **kwargs)
    return answer, torch.cat(recorder.scores)


def pipeline_answer(pipe, video, question=QUESTION, **kwargs):
    out = pipe(videos=video, text=question, return_full_text=False, **kwargs)
    return out[0]["generated_text"]


# -- the IFA cache ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_chunks", [1, 2, 9])
@pytest.mark.parametrize("position_mode", ["chunk", "token"])
def test_aggregator_cache_equals_the_full_prefix_forward(tokenizer, num_chunks, position_mode):
    config = tiny_mavors_config(tokenizer, vision_overrides={"ifa_position_mode": position_mode})
    torch.manual_seed(0)
    aggregator = randomize_(MavorsForConditionalGeneration(config)).model.vision_model.aggregator.eval()
    tokens = 4
    hidden = torch.randn(1, num_chunks * tokens, config.vision_config.hidden_size)
    positions = torch.tensor([[3 * i for i in range(num_chunks)]])  # gaps, as accelerated playback leaves
    with torch.no_grad():
        full = aggregator(hidden, positions, tokens)
        cache = AggregatorCache()
        pieces = [
            cache.extend(aggregator, chunk, positions[:, i : i + 1].repeat_interleave(tokens, dim=1))
            for i, chunk in enumerate(hidden.split(tokens, dim=1))
        ]
    assert cache.num_tokens == num_chunks * tokens
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert not torch.equal(full[:, -tokens:], hidden[:, -tokens:])  # the IFA did something


def test_provisional_extension_leaves_the_cache_as_it_was(model):
    aggregator = model.model.vision_model.aggregator
    cache = AggregatorCache()
    hidden = torch.randn(1, 12, aggregator.config.hidden_size)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with torch.no_grad():
        cache.extend(aggregator, hidden[:, :4], ids)
        kept = cache.extend(aggregator, hidden[:, 4:8], ids + 1, commit=False)
        again = cache.extend(aggregator, hidden[:, 4:8], ids + 1, commit=False)
        assert cache.num_tokens == 4
        final = cache.extend(aggregator, hidden[:, 4:8], ids + 1)
    assert torch.equal(kept, again) and torch.equal(kept, final)


# -- exactness against the pipeline -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [F, 2 * F, 9 * F + 2])
def test_ask_equals_the_pipeline_on_the_whole_clip(model, processor, pipe, num_frames):
    frames = make_sample_frames(num_frames, 96, 128, seed=num_frames)
    session = MavorsVideoSession(model, processor, fps=FPS)
    append_in_random_pieces(session, frames, seed=num_frames)
    assert session.num_frames == num_frames and session.num_chunks == num_frames // F

    inputs = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "video", "video": frames}, {"type": "text", "text": QUESTION}],
            }
        ],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"fps": FPS, "max_chunks": 64},
    )
    assert session.prompt_ids(QUESTION) == inputs["input_ids"][0].tolist()

    answer, scores = answer_with_scores(session.ask, text=QUESTION)
    reference, reference_scores = answer_with_scores(
        lambda **kw: pipeline_answer(pipe, frames, fps=FPS, max_chunks=64, **kw)
    )
    assert answer == reference
    torch.testing.assert_close(scores, reference_scores, atol=1e-4, rtol=1e-4)
    # the question left no trace: asking again gives the same scores
    assert torch.allclose(answer_with_scores(session.ask, text=QUESTION)[1], scores, atol=1e-6)


def test_partial_chunk_is_replaced_once_it_completes(model, processor, pipe):
    frames = make_sample_frames(3 * F, 96, 128, seed=7)
    session = MavorsVideoSession(model, processor, fps=FPS)
    session.append(frames[: 2 * F + 1])
    assert session.ask(QUESTION, **GREEDY) == pipeline_answer(pipe, frames[: 2 * F + 1], fps=FPS, **GREEDY)
    session.append(frames[2 * F + 1 :])
    assert session.num_chunks == 3
    assert session.ask(QUESTION, **GREEDY) == pipeline_answer(pipe, frames, fps=FPS, **GREEDY)


def test_from_video_equals_the_pipeline_with_accelerated_playback(model, processor, pipe, tmp_path):
    path = str(write_sample_video(tmp_path / "clip.mp4", num_frames=40, fps=8))
    # 40 frames at 8 fps = 5 s = 20 targets at fps 4; max_chunks=3 keeps 12 of them (accelerated playback)
    session = MavorsVideoSession.from_video(model, processor, path, fps=FPS, max_chunks=3)
    assert session.num_chunks == 3 and session.playback_speed > 1
    assert (
        session.chunk_positions
        == processor.video_processor.plan_video(path, fps=FPS, max_chunks=3)["chunk_positions"]
    )
    for question in (QUESTION, "Describe the video."):
        reference, reference_scores = answer_with_scores(
            lambda question=question, **kw: pipeline_answer(pipe, path, question, fps=FPS, max_chunks=3, **kw)
        )
        answer, scores = answer_with_scores(session.ask, text=question)
        assert answer == reference
        torch.testing.assert_close(scores, reference_scores, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="from_video"):
        session.append(make_sample_frames(F, 96, 128))


# -- once-only --------------------------------------------------------------------------------------------------


class CallRecorder:
    """Forward hooks recording the leading sizes of a module's first input (or its `inputs_embeds`)."""

    def __init__(self, module, dim=1):
        self.calls, self.dim = [], dim
        self.handle = module.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        value = args[0] if args else kwargs.get("inputs_embeds", kwargs.get("input_ids"))
        if value is None:
            value = kwargs.get("input_ids")
        self.calls.append(value.shape[self.dim])

    def remove(self):
        self.handle.remove()


def test_second_ask_runs_no_vision_and_prefills_only_the_question(model, processor):
    session = MavorsVideoSession(model, processor, fps=FPS)
    session.append(make_sample_frames(3 * F + 1, 96, 128))  # 3 chunks and a pending partial one
    vision = CallRecorder(model.model.vision_model.embeddings, dim=0)
    language = CallRecorder(model.model.language_model)
    questions = ("Describe the video.", "How many shapes are there?")
    suffixes = [len(session._prompt_parts(q)[1]) for q in questions]
    try:
        session.ask(questions[0], max_new_tokens=3, do_sample=False)
        pending_tokens = session._provisional_tokens
        assert vision.calls == [1] and pending_tokens > 0  # the padded partial chunk, once
        # prefill: the pending chunk's tokens, then the question's but its last, then generate (one token a step)
        assert language.calls == [pending_tokens, suffixes[0] - 1, 1, 1, 1]
        for question, suffix in zip(questions, suffixes, strict=True):
            vision.calls.clear(), language.calls.clear()
            session.ask(question, max_new_tokens=3, do_sample=False)
            assert vision.calls == []
            assert language.calls == [suffix - 1, 1, 1, 1]
        # a new frame makes the padded chunk stale: it is encoded again, once
        session.append(make_sample_frames(1, 96, 128, seed=3))
        vision.calls.clear(), language.calls.clear()
        session.ask(questions[0], max_new_tokens=1, do_sample=False)
        session.ask(questions[1], max_new_tokens=1, do_sample=False)
        assert vision.calls == [1]
        assert language.calls == [session._provisional_tokens, suffixes[0] - 1, 1, suffixes[1] - 1, 1]
    finally:
        vision.remove(), language.remove()


def test_appending_chunk_k_encodes_that_chunk_only(model, processor):
    frames = make_sample_frames(5 * F, 96, 128, seed=5)
    rows = processor.video_processor(frames, fps=FPS, return_tensors="pt")["pixel_values_videos"]
    per_chunk = rows.shape[0] // 5
    seen = []
    hook = model.model.vision_model.embeddings.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    ifa = CallRecorder(model.model.vision_model.aggregator.layers[0].self_attn.q_proj)
    try:
        session = MavorsVideoSession(model, processor, fps=FPS)
        for k in range(5):
            session.append(frames[k * F : k * F + F - 1])
            assert len(seen) == k  # an incomplete chunk is not encoded by append
            session.append(frames[k * F + F - 1])
            assert len(seen) == k + 1 and seen[k].shape[0] == 1
            torch.testing.assert_close(seen[k][0], rows[k * per_chunk : (k + 1) * per_chunk], atol=0, rtol=0)
        # the IFA ran on each new chunk's tokens alone
        assert ifa.calls == [session._features[0].shape[0]] * 5
    finally:
        hook.remove(), ifa.remove()


# -- inputs, policy, errors -------------------------------------------------------------------------------------


def test_frames_in_every_accepted_form_give_the_same_answer(model, processor):
    from PIL import Image

    frames = make_sample_frames(2 * F + 1, 96, 128, seed=2)
    answers = []
    for form in (frames, torch.from_numpy(frames), [Image.fromarray(f) for f in frames]):
        session = MavorsVideoSession(model, processor, fps=FPS)
        session.append(form)
        answers.append(session.ask(QUESTION, **GREEDY))
    one_by_one = MavorsVideoSession(model, processor, fps=FPS)
    for frame in frames:
        one_by_one.append(frame)
    answers.append(one_by_one.ask(QUESTION, **GREEDY))
    assert len(set(answers)) == 1


def test_a_frame_of_another_size_is_a_value_error(model, processor):
    session = MavorsVideoSession(model, processor, fps=FPS)
    session.append(make_sample_frames(F + 1, 96, 128))
    with pytest.raises(ValueError, match="128x96"):
        session.append(make_sample_frames(1, 64, 128))
    session.reset()
    assert session.num_frames == 0 and session.num_chunks == 0
    session.append(make_sample_frames(1, 64, 128))  # a reset session takes a new size


def test_timestamps_resample_to_the_session_fps(model, processor):
    frames = make_sample_frames(4 * F, 96, 128, seed=4)
    timed = MavorsVideoSession(model, processor, fps=FPS)
    timed.append(frames[:5], timestamps=[i / (2 * FPS) for i in range(5)])  # twice the session's rate
    timed.append(frames[5:], timestamps=[i / (2 * FPS) for i in range(5, len(frames))])
    plain = MavorsVideoSession(model, processor, fps=FPS)
    plain.append(frames[::2])  # what fixed-fps sampling keeps: target k shows frame 2k
    assert timed.num_frames == plain.num_frames == 2 * F
    assert timed.ask(QUESTION, **GREEDY) == plain.ask(QUESTION, **GREEDY)
    with pytest.raises(ValueError, match="decrease"):
        timed.append(frames[:1], timestamps=[0.0])
    with pytest.raises(ValueError, match="timestamps"):
        timed.append(frames[:1])


def test_streams_beyond_the_budget_thin_chunks_and_stay_exact(model, processor):
    budget = 4
    frames = make_sample_frames(13 * F + 2, 96, 128, seed=9)
    session = MavorsVideoSession(model, processor, fps=FPS, max_chunks=budget)
    sizes = []
    for start in range(0, len(frames), F):
        session.append(frames[start : start + F])
        assert session.num_chunks <= budget
        sizes.append(sum(session.cached_bytes.values()))
    # 13 stream chunks: thinned at chunk 4 (keep 0, 2) and at 8 (keep 0, 4): chunks 0, 4, 8, 12 are kept
    assert session.playback_speed == 4 and session.chunk_positions == [0, 4, 8, 12]
    assert max(sizes) <= 2 * sizes[budget - 1]  # bounded: never beyond the state of a full budget (+ frames)
    # exact: the offline model on the kept chunks' frames at their positions
    kept = np.concatenate([frames[c * F : c * F + F] for c in session.chunk_positions])
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": kept}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"fps": FPS, "max_chunks": 64},
    )
    inputs["video_chunk_positions"] = torch.tensor(session.chunk_positions)
    reference = model.generate(**inputs, **GREEDY)
    expected = processor.post_process_image_text_to_text(reference[:, inputs["input_ids"].shape[1] :])[0]
    assert session.ask(QUESTION, **GREEDY) == expected  # the partial stream chunk 13 is skipped (13 % 4)


def test_token_compression_is_a_clear_error(model, processor):
    with pytest.raises(ValueError, match="incrementally"):
        MavorsVideoSession(model, processor, token_compression_threshold=0.9)


def test_a_session_without_frames_refuses_questions(model, processor):
    with pytest.raises(ValueError, match="append frames"):
        MavorsVideoSession(model, processor).ask(QUESTION)


# -- streaming and the chat loop --------------------------------------------------------------------------------


def test_text_iterator_streamer_streams_the_answer(model, processor):
    session = MavorsVideoSession(model, processor, fps=FPS)
    session.append(make_sample_frames(2 * F + 3, 96, 128))
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(answer=session.ask(QUESTION, streamer=streamer, **GREEDY))
    )
    thread.start()
    streamed = "".join(streamer)
    thread.join(timeout=60)
    assert streamed == result["answer"] == session.ask(QUESTION, **GREEDY)


def test_appends_from_a_capture_thread_interleave_safely_with_asks(model, processor, pipe):
    frames = make_sample_frames(3 * F + 2, 96, 128, seed=11)
    session = MavorsVideoSession(model, processor, fps=FPS)
    camera = threading.Thread(target=lambda: [session.append(frame) for frame in frames])
    camera.start()
    while camera.is_alive():
        if session.num_frames:
            session.ask(QUESTION, max_new_tokens=1, do_sample=False)  # each sees a consistent prefix
    camera.join(timeout=60)
    assert session.ask(QUESTION, **GREEDY) == pipeline_answer(pipe, frames, fps=FPS, **GREEDY)


def test_run_chat_answers_until_an_empty_line(model, processor):
    session = MavorsVideoSession(model, processor, fps=FPS)
    session.append(make_sample_frames(2 * F, 96, 128))
    questions = iter([QUESTION, "Describe the video.", "", "never asked"])
    written = []
    answered = run_chat(session, read_line=lambda prompt: next(questions), write=written.append, **GREEDY)
    assert answered == 2
    assert written == [session.ask(QUESTION, **GREEDY), session.ask("Describe the video.", **GREEDY)]

    def end_of_input(prompt):
        raise EOFError

    assert run_chat(session, read_line=end_of_input, write=written.append) == 0


@pytest.mark.slow
def test_live_video_example_answers_while_the_file_plays():
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "live_video.py"
    result = subprocess.run(
        [sys.executable, str(example), "--speed", "16", "--every", "4", "--max-new-tokens", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "chunks cached" in line]
    assert len(lines) >= 3  # 12 s of video: questions at 4 s, 8 s and at the end


def test_mavors_chat_answers_each_line_as_the_pipeline_does(model, processor, pipe, tmp_path):
    import subprocess
    import sys

    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    path = str(write_sample_video(tmp_path / "clip.mp4", num_frames=40, fps=8))
    questions = [QUESTION, "Describe the video."]
    code = "import sys; from transformers_mavors_cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "chat", "--model", str(checkpoint), "--video", path, "--fps", "4"]
        + ["--max-chunks", "3", "--max-new-tokens", "6"],
        input="\n".join(questions) + "\n\nnot asked\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = [pipeline_answer(pipe, path, q, fps=FPS, max_chunks=3, **GREEDY).strip() for q in questions]
    assert result.stdout == "".join(answer + "\n" for answer in expected)
    assert "encoded once" in result.stderr


def test_mavors_chat_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    code = "import sys; from transformers_mavors_cli import main; sys.exit(main(sys.argv[1:]))"
    usage = subprocess.run([sys.executable, "-c", code, "chat"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--video" in usage.stderr
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    result = subprocess.run(
        [sys.executable, "-c", code, "chat", "--video", str(broken)],
        input="",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "mavors chat: error:" in result.stderr and "broken.mp4" in result.stderr
    assert "Traceback" not in result.stderr
