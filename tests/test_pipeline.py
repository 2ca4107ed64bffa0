"""The video-text-to-text pipeline, the stock image-text-to-text pipeline, and Hub-ready checkpoints."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
    TextIteratorStreamer,
    pipeline,
)

from transformers_mavors.testing_utils import tiny_processor, write_sample_video


@pytest.fixture(scope="module")
def video_path(sample_video):
    return sample_video(24)


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return pipeline("video-text-to-text", model=str(checkpoint))


def reference_answers(checkpoint, messages, max_new_tokens=6, generate_kwargs=None, **processor_kwargs):
    """What model.generate answers for one chat (every returned sequence), computed without the pipeline."""
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs=processor_kwargs,
    )
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **(generate_kwargs or {}))
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def reference_answer(checkpoint, messages, max_new_tokens=6, **processor_kwargs):
    """What model.generate answers for one chat, computed without the pipeline."""
    return reference_answers(checkpoint, messages, max_new_tokens, **processor_kwargs)[0]


def video_chat(video, prompt="Describe the video."):
    return [{"role": "user", "content": [{"type": "video", "path": video}, {"type": "text", "text": prompt}]}]


def test_pipeline_on_a_video_file_matches_generate(pipe, checkpoint, video_path):
    out = pipe(
        videos=video_path,
        text="Describe the video.",
        max_new_tokens=6,
        return_full_text=False,
        do_sample=False,
    )
    assert isinstance(out, list) and len(out) == 1
    assert out[0]["generated_text"] == reference_answer(checkpoint, video_chat(video_path))


def test_pipeline_full_text_returns_the_chat_with_the_answer(pipe, video_path):
    out = pipe(videos=video_path, text="Describe the video.", max_new_tokens=4, do_sample=False)
    messages = out[0]["generated_text"]
    assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
    assert isinstance(messages[-1]["content"], str)


def test_pipeline_on_a_chat_and_on_frames(pipe, checkpoint, video_path):
    chat = video_chat(video_path, "What moves?")
    out = pipe(text=chat, max_new_tokens=5, return_full_text=False, do_sample=False)
    assert out[0]["generated_text"] == reference_answer(checkpoint, chat, max_new_tokens=5)
    frames = np.random.default_rng(0).integers(0, 255, size=(9, 60, 80, 3), dtype=np.uint8)
    out = pipe(videos=frames, text="What moves?", max_new_tokens=3, return_full_text=False, do_sample=False)
    frames_chat = [
        {
            "role": "user",
            "content": [{"type": "video", "video": frames}, {"type": "text", "text": "What moves?"}],
        }
    ]
    assert out[0]["generated_text"] == reference_answer(checkpoint, frames_chat, max_new_tokens=3)


def test_pipeline_passes_processor_options(pipe, checkpoint, video_path):
    chat = video_chat(video_path)
    slow = pipe(text=chat, max_new_tokens=5, return_full_text=False, do_sample=False, fps=2, max_chunks=1)
    assert slow[0]["generated_text"] == reference_answer(checkpoint, chat, 5, fps=2, max_chunks=1)


def test_processor_options_reach_the_processor_even_when_the_template_reads_their_names(
    checkpoint, video_path, monkeypatch
):
    """Without the pipeline's own routing, `fps=` / `max_chunks=` would become chat-template variables, and
    transformers forwards such kwargs to the processor only when the template does not read them."""
    pipe = pipeline("video-text-to-text", model=str(checkpoint))
    pipe.processor.chat_template = (
        "{% if fps is defined %}At {{ fps }} fps, {{ max_chunks }} chunks. {% endif %}"
        + pipe.processor.chat_template
    )
    generate, seen = pipe.model.generate, []
    monkeypatch.setattr(pipe.model, "generate", lambda **inputs: seen.append(inputs) or generate(**inputs))
    chat = video_chat(video_path)
    out = pipe(text=chat, max_new_tokens=5, return_full_text=False, do_sample=False, fps=2, max_chunks=1)
    assert seen[0]["video_grid_thw"].tolist() == [[1, 4, 4]]  # one chunk (three at the processor's defaults)
    assert " fps, " not in pipe.processor.decode(seen[0]["input_ids"][0])
    assert out[0]["generated_text"] == reference_answer(checkpoint, chat, 5, fps=2, max_chunks=1)


def test_generation_options_reach_generate(pipe, checkpoint, video_path):
    """Generation options given to the call go to `generate` (the parent pipeline would hand them to the processor,
    which ignores them): beam search with two returned sequences, and a whole `generation_config`."""
    chat = video_chat(video_path)
    beams = pipe(
        text=chat,
        max_new_tokens=4,
        return_full_text=False,
        do_sample=False,
        num_beams=2,
        num_return_sequences=2,
    )
    expected = reference_answers(
        checkpoint, chat, 4, generate_kwargs=dict(num_beams=2, num_return_sequences=2)
    )
    assert [candidate["generated_text"] for candidate in beams] == expected and len(expected) == 2
    short = pipe(
        text=chat,
        return_full_text=False,
        generation_config=GenerationConfig(max_new_tokens=2, do_sample=False),
    )
    assert short[0]["generated_text"] == reference_answer(checkpoint, chat, max_new_tokens=2)


def test_pipeline_batches_with_left_padding(pipe, video_path, tmp_path):
    other = str(write_sample_video(tmp_path / "short.mp4", num_frames=8, fps=8, seed=3))
    prompts = ["Describe the video.", "What colour is the square?"]
    batched = pipe(
        videos=[video_path, other],
        text=prompts,
        batch_size=2,
        max_new_tokens=5,
        return_full_text=False,
        do_sample=False,
    )
    singles = [
        pipe(videos=v, text=t, max_new_tokens=5, return_full_text=False, do_sample=False)
        for v, t in zip([video_path, other], prompts, strict=True)
    ]
    assert [b[0]["generated_text"] for b in batched] == [s[0]["generated_text"] for s in singles]


def test_pipeline_streams_through_a_text_iterator_streamer(pipe, video_path):
    # a timeout, so that a streamer that never reached generate fails the test instead of hanging it
    streamer = TextIteratorStreamer(
        pipe.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60
    )
    out = pipe(
        videos=video_path,
        text="Describe the video.",
        max_new_tokens=6,
        streamer=streamer,
        return_full_text=False,
        do_sample=False,
    )
    assert "".join(streamer) == out[0]["generated_text"]


def test_unreadable_video_gives_the_processor_error(pipe, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="broken.mp4"):
        pipe(videos=str(broken), text="Describe.", max_new_tokens=2)


def test_pipeline_rejects_mismatched_frames_per_chunk(checkpoint, tokenizer):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    processor = tiny_processor(tokenizer)
    processor.video_processor.frames_per_chunk = 8
    with pytest.raises(ValueError, match="frames_per_chunk"):
        pipeline("video-text-to-text", model=model, processor=processor)


def test_stock_image_text_to_text_pipeline_works(checkpoint):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 168, 3), dtype=np.uint8))
    chat = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}
    ]
    pipe = pipeline("image-text-to-text", model=str(checkpoint))
    out = pipe(text=chat, max_new_tokens=4, return_full_text=False, do_sample=False)
    assert out[0]["generated_text"] == reference_answer(checkpoint, chat, max_new_tokens=4)


def test_remote_code_loads_without_the_package(checkpoint, video_path):
    """A fresh interpreter in which `import transformers_mavors` fails loads the checkpoint from its own code."""
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "transformers_mavors":
                    raise ImportError("transformers_mavors is blocked in this test")
        sys.meta_path.insert(0, Block())
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        assert not type(model).__module__.startswith("transformers_mavors"), type(model).__module__
        messages = [{{"role": "user", "content": [{{"type": "video", "path": {video_path!r}}},
                                                  {{"type": "text", "text": "Describe the video."}}]}}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        print("ANSWER=" + repr(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = eval(result.stdout.split("ANSWER=")[-1].strip())
    assert answer == reference_answer(checkpoint, video_chat(video_path))


def test_device_map_auto_load_on_cpu(checkpoint, video_path):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, device_map="auto")
    assert model.device.type == "cpu"
    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor.apply_chat_template(
        video_chat(video_path),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    answer = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer == reference_answer(checkpoint, video_chat(video_path))


def test_checkpoint_writes_code_auto_map_and_safetensors_only(checkpoint):
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    assert (
        config["auto_map"]["AutoModelForImageTextToText"] == "modeling_mavors.MavorsForConditionalGeneration"
    )
    for name in ("modeling_mavors.py", "configuration_mavors.py", "processing_mavors.py"):
        assert (checkpoint / name).is_file(), name
    assert not list(checkpoint.glob("*.bin"))


def test_incomplete_checkpoint_error_names_missing_files(checkpoint, tmp_path):
    import shutil

    from transformers_mavors.hub import check_checkpoint_dir

    partial = tmp_path / "partial"
    shutil.copytree(checkpoint, partial)
    (partial / "model.safetensors").unlink()
    (partial / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors.*processor_config.json"):
        check_checkpoint_dir(partial)


def test_inference_example_runs_and_batch_matches_single_prompts():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "inference.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {
        line.split(":", 1)[0]: line.split(":", 1)[1] for line in result.stdout.splitlines() if ":" in line
    }
    assert {"video", "image", "multi-turn", "batch[0]", "batch[1]"} <= set(lines)
    assert lines["batch[0]"] == lines["video"]


def test_answer_chats_batches_like_the_pipeline_and_changes_no_state(pipe, checkpoint, video_path):
    from transformers_mavors.generation import answer_chats
    from transformers_mavors.testing_utils import make_sample_frames

    frames = make_sample_frames(12, height=56, width=84, seed=5)
    chats = [
        video_chat(video_path),
        [
            {
                "role": "user",
                "content": [{"type": "video", "video": frames}, {"type": "text", "text": "Where?"}],
            }
        ],
    ]
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).train()
    processor = AutoProcessor.from_pretrained(checkpoint)
    processor.tokenizer.padding_side = "right"
    answers = answer_chats(model, processor, chats, max_new_tokens=5, do_sample=False)
    # the tokenizer's padding side and the model's mode are as the caller left them
    assert processor.tokenizer.padding_side == "right" and model.training
    alone = [reference_answer(checkpoint, chat, max_new_tokens=5) for chat in chats]
    assert answers == alone
    batched = pipe(text=chats, batch_size=2, max_new_tokens=5, return_full_text=False, do_sample=False)
    assert [b[0]["generated_text"] for b in batched] == answers
