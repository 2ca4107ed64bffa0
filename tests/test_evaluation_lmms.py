"""The lmms-eval adapter (`transformers_mavors.evaluation.lmms_eval`) and the offline synthetic tasks (issue 16).

Runs where lmms-eval is installed (`.ci/engines/evaluation.sh` sets it up, docs/evaluation.md). The end-to-end
tests run the real `python -m lmms_eval` CLI in a subprocess on the shipped demo model; the others drive the
adapter in process against the model called directly.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

lmms_eval = pytest.importorskip("lmms_eval")

from PIL import Image  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline  # noqa: E402

import transformers_mavors  # noqa: E402, F401  (registers the Auto classes and the pipeline task)
from transformers_mavors.evaluation.lmms_eval import Mavors, MediaError, keep_loglikelihood_pairs  # noqa: E402
from transformers_mavors.evaluation.tasks import TASK_NAMES, write_jsonl, write_tasks  # noqa: E402
from transformers_mavors.evaluation.tasks import utils as task_utils  # noqa: E402
from transformers_mavors.synthetic.demo import demo_model_path  # noqa: E402
from transformers_mavors.synthetic.scenes import make_scene  # noqa: E402

MAX_NEW_TOKENS = {"mavors_synthetic_mc": 16, "mavors_synthetic_caption": 24}
TIMEOUT_S = 300


def run_lmms_eval(include_path, tasks, output_path, batch_size: int = 2) -> subprocess.CompletedProcess:
    """The real CLI, offline, with DEBUG verbosity (at lower verbosity a failing run can exit 0)."""
    command = [
        sys.executable,
        "-m",
        "lmms_eval",
        "--model",
        "mavors",
        "--model_args",
        f"pretrained={demo_model_path()},fps=4,max_chunks=8",
        "--batch_size",
        str(batch_size),
        "--include_path",
        str(include_path),
        "--tasks",
        ",".join(tasks),
        "--output_path",
        str(output_path),
        "--log_samples",
        "--verbosity",
        "DEBUG",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, cwd=output_path
    )


def read_run(output_path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """The results file's scores and each task's logged samples (sorted by document)."""
    (results_file,) = output_path.rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    samples = {}
    for name in TASK_NAMES:
        (path,) = output_path.rglob(f"*_samples_{name}.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        samples[name] = sorted(rows, key=lambda row: row["doc_id"])
    return results, samples


@pytest.fixture(scope="module")
def demo():
    path = demo_model_path()
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    return model, processor


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """The three offline tasks written once and evaluated once through `python -m lmms_eval`."""
    root = tmp_path_factory.mktemp("lmms_tasks")
    written = write_tasks(root / "tasks", per_kind=2, captions=2, progress=False)
    output = root / "out"
    output.mkdir()
    run = run_lmms_eval(written["include_path"], TASK_NAMES, output)
    assert run.returncode == 0, run.stderr[-3000:]
    results, samples = read_run(output)
    return written, results, samples


def test_offline_generation_tasks_score_what_the_pipeline_scores(offline_run, demo):
    written, results, samples = offline_run
    model, processor = demo
    pipe = pipeline("video-text-to-text", model=model, processor=processor)
    tasks = {
        "mavors_synthetic_mc": (written["mc"], task_utils.mc_doc_to_text, task_utils.mc_process_results),
        "mavors_synthetic_caption": (
            written["caption"],
            task_utils.question_doc_to_text,
            task_utils.caption_process_results,
        ),
    }
    for name, (docs, doc_to_text, process_results) in tasks.items():
        answers = pipe(
            videos=[doc["video"] for doc in docs],
            text=[doc_to_text(doc) for doc in docs],
            max_new_tokens=MAX_NEW_TOKENS[name],
            do_sample=False,
            return_full_text=False,
            batch_size=2,
            fps=4,
            max_chunks=8,
        )
        texts = [answer[0]["generated_text"] for answer in answers]
        logged = [row["filtered_resps"] for row in samples[name]]
        logged = [text[0] if isinstance(text, list) else text for text in logged]
        assert logged == texts, name  # the adapter adds nothing and drops nothing
        (metric,) = process_results(docs[0], [texts[0]])
        expected = float(
            np.mean([process_results(doc, [text])[metric] for doc, text in zip(docs, texts, strict=True)])
        )
        assert results[name][f"{metric},none"] == pytest.approx(expected), name
    # the demo model knows the captions of its domain: the task can tell a right answer from a wrong one
    assert results["mavors_synthetic_caption"]["caption_exact_match,none"] > 0


def direct_log_prob(model, processor, doc: dict, continuation: str) -> float:
    """log p(continuation | the chat prompt with the generation prompt), from one full forward of the model."""
    chat = [
        {
            "role": "user",
            "content": [{"type": "video", "video": doc["video"]}, {"type": "text", "text": doc["question"]}],
        }
    ]
    inputs = processor.apply_chat_template(
        [chat],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"fps": 4, "max_chunks": 8},
    )
    prompt_length = inputs["input_ids"].shape[1]
    ids = processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
    log_probs = torch.log_softmax(logits[prompt_length - 1 : -1], dim=-1)
    return float(log_probs.gather(-1, torch.tensor(ids)[:, None]).sum())


def test_loglikelihood_choices_are_the_model_log_probabilities(offline_run, demo):
    written, results, samples = offline_run
    model, processor = demo
    rows = samples["mavors_synthetic_mc_ll"]
    assert len(rows) == len(written["mc"])
    hits = []
    for doc, row in zip(written["mc"], rows, strict=True):
        # lmms-eval passes target_delimiter ("") + the choice; the adapter returns (-log p, greedy) per choice
        logged = [-float(value) for value, _ in row["filtered_resps"]]
        direct = [direct_log_prob(model, processor, doc, choice) for choice in doc["choices"]]
        np.testing.assert_allclose(logged, direct, rtol=1e-4, atol=1e-4)
        chosen = int(np.argmax(direct))
        assert row["acc"] == float(chosen == task_utils.doc_to_target_index(doc))
        greedy = [flag in (True, "True") for _, flag in row["filtered_resps"]]
        assert sum(greedy) <= 1 and (not any(greedy) or greedy.index(True) == chosen)
        hits.append(chosen == task_utils.doc_to_target_index(doc))
    assert results["mavors_synthetic_mc_ll"]["acc,none"] == pytest.approx(np.mean(hits))


def test_the_loglikelihood_workaround_keeps_pairs_and_nothing_else():
    import lmms_eval.evaluator as evaluator

    keep_loglikelihood_pairs()
    unwrap = evaluator.unwrap_generation_output
    assert unwrap((-1.25, True)) == ((-1.25, True), None)
    assert unwrap("an answer") == ("an answer", None)
    assert unwrap(["round one", "round two"]) == (["round one", "round two"], None)
    assert keep_loglikelihood_pairs() is False  # installed once


class Requests:
    """lmms-eval requests over an in-memory task, for driving the adapter in process."""

    def __init__(self, adapter: Mavors, docs: list[dict], task: str = "memory", split: str = "test"):
        self.task, self.split = task, split
        adapter.task_dict = {task: {split: docs}}

    @staticmethod
    def doc_to_visual(doc):
        return doc["visuals"]

    def make(self, request_type: str, doc_id: int, *args):
        arguments = (*args, self.doc_to_visual, doc_id, self.task, self.split)
        metadata = {"task": self.task, "doc_id": doc_id, "repeats": 1}
        return lmms_eval.api.instance.Instance(request_type, arguments, idx=0, metadata=metadata)


@pytest.fixture(scope="module")
def adapter():
    return Mavors(
        pretrained=str(demo_model_path()), device="cpu", batch_size=4, fps=4, max_chunks=8, progress=False
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_media")
    from transformers_mavors.synthetic.scenes import write_video

    videos = []
    for task, seed in (("motion", 3), ("caption", 4), ("order", 5)):
        videos.append(str(write_video(make_scene(task, seed).frames, root / f"{task}_{seed}.mp4")))
    image = root / "frame.png"
    Image.fromarray(make_scene("order", 6).frames[2]).save(image)
    return videos, str(image)


def test_loglikelihood_encodes_each_video_once_per_document(adapter, media):
    videos, _ = media
    docs = [{"visuals": [videos[0]]}, {"visuals": [videos[2]]}]
    requests = Requests(adapter, docs)
    choices = ["left", "right", "up", "down"]
    batch = [
        requests.make("loglikelihood", d, "Which way does the square move?", c)
        for d in (0, 1)
        for c in choices
    ]
    calls = []
    hook = adapter.model.model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    try:
        scores = adapter.loglikelihood(batch)
    finally:
        hook.remove()
    assert len(calls) == 2  # one vision-tower run per document, shared by its four choices
    assert len(scores) == 8 and all(isinstance(v, float) and isinstance(g, bool) for v, g in scores)
    model, processor = adapter.model, adapter.processor
    for index, request in enumerate(batch):
        doc = {"video": docs[request.args[3]]["visuals"][0], "question": request.args[0]}
        assert -scores[index][0] == pytest.approx(
            direct_log_prob(model, processor, doc, request.args[1]), abs=1e-4
        )


def generate_alone(model, processor, blocks: list[dict], text: str, max_new_tokens: int) -> str:
    """`model.generate` on one chat (no batch, no padding)."""
    chat = [{"role": "user", "content": [*blocks, {"type": "text", "text": text}]}]
    return generate_chat(model, processor, chat, max_new_tokens)


def generate_chat(model, processor, chat: list[dict], max_new_tokens: int) -> str:
    inputs = processor.apply_chat_template(
        [chat],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"fps": 4, "max_chunks": 8},
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def test_generate_until_batches_mixed_images_and_videos_like_one_by_one(adapter, media):
    videos, image = media
    pil_image = Image.open(image).convert("RGB")
    docs = [
        {"visuals": [videos[0]], "text": "Which way does the square move?"},
        {"visuals": [pil_image], "text": "Which colour appears first?"},
        {"visuals": [videos[1]], "text": "Describe the video."},
        {"visuals": [image, videos[2]], "text": "Which colour appears first?"},
        {"visuals": [videos[2], videos[0]], "text": "Describe the video."},
    ]
    requests = Requests(adapter, docs)
    gen_kwargs = {"max_new_tokens": 12, "temperature": 0, "until": ["\n\n"]}
    batch = [requests.make("generate_until", i, doc["text"], dict(gen_kwargs)) for i, doc in enumerate(docs)]
    answers = adapter.generate_until(batch)
    blocks = [adapter._media_blocks(doc["visuals"], "memory", i) for i, doc in enumerate(docs)]
    alone = [
        generate_alone(adapter.model, adapter.processor, b, d["text"], 12)
        for b, d in zip(blocks, docs, strict=True)
    ]
    assert answers == alone
    assert len(set(answers)) > 1  # the answers depend on the media

    # `until` cuts the text at the first stop string; `max_new_tokens` bounds it
    stop = alone[2].split()[1]
    cut = adapter.generate_until([requests.make("generate_until", 2, docs[2]["text"], {"until": [stop]})])
    assert cut == [alone[2][: alone[2].index(stop)]]
    short = adapter.generate_until(
        [requests.make("generate_until", 2, docs[2]["text"], {"max_new_tokens": 2})]
    )
    assert short == [generate_alone(adapter.model, adapter.processor, blocks[2], docs[2]["text"], 2)]


def test_generate_until_multi_round_keeps_the_conversation(adapter, media):
    videos, _ = media
    docs = [{"visuals": [videos[1]]}]
    requests = Requests(adapter, docs)
    seen = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        seen.append((round_idx, list(previous_output)))
        if round_idx == 2:
            return None, None, True, previous_output, None
        return None, "Which colour appears first?", False, previous_output, {"round": round_idx}

    request = lmms_eval.api.instance.Instance(
        "generate_until_multi_round",
        (
            "Describe the video.",
            {"max_new_tokens": 8},
            requests.doc_to_visual,
            doc_to_text,
            0,
            "memory",
            "test",
        ),
        idx=0,
        metadata={"task": "memory", "doc_id": 0, "repeats": 1},
    )
    (answers,) = adapter.generate_until_multi_round([request])
    assert len(answers) == 2 and seen == [(1, answers[:1]), (2, answers)]
    # the second round answers with the first question, its answer and the new question in context
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": videos[1]},
                {"type": "text", "text": "Describe the video."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": answers[0]}]},
        {"role": "user", "content": [{"type": "text", "text": "Which colour appears first?"}]},
    ]
    assert answers[0] == generate_chat(adapter.model, adapter.processor, chat[:1], 8)
    assert answers[1] == generate_chat(adapter.model, adapter.processor, chat, 8)


def test_missing_media_is_an_error_naming_the_document(adapter, tmp_path):
    requests = Requests(adapter, [{"visuals": [str(tmp_path / "gone.mp4")]}], task="broken")
    with pytest.raises(
        MediaError, match=r"task 'broken' document 0: media file .*gone\.mp4.* does not exist"
    ):
        adapter.generate_until([requests.make("generate_until", 0, "Describe the video.", {})])
    with pytest.raises(TypeError, match="unknown mavors model_args"):
        Mavors(pretrained=str(demo_model_path()), frames_per_second=4)
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        Mavors(pretrained=str(demo_model_path()), batch_size="auto")


def test_the_cli_reports_a_task_with_missing_media_naming_the_document(tmp_path):
    written = write_tasks(tmp_path / "tasks", per_kind=1, captions=2, progress=False)
    docs = written["caption"]
    docs[1]["video"] = str(tmp_path / "missing" / "caption_video.mp4")
    write_jsonl(docs, Path(written["include_path"]) / "caption.jsonl")
    output = tmp_path / "out"
    output.mkdir()
    run = run_lmms_eval(written["include_path"], ["mavors_synthetic_caption"], output)
    assert run.returncode != 0
    assert "task 'mavors_synthetic_caption' document 1: media file" in run.stderr
    assert "missing/caption_video.mp4" in run.stderr
    assert not list(output.rglob("*_results.json"))


def test_loglikelihood_with_token_compression_scores_the_compressed_prompt(media):
    from transformers_mavors.pipelines import encode_videos_first

    videos, _ = media
    compressed = Mavors(
        pretrained=str(demo_model_path()),
        device="cpu",
        fps=4,
        max_chunks=8,
        token_compression_threshold=0.5,
        progress=False,
    )
    requests = Requests(compressed, [{"visuals": [videos[1]]}])
    (score,) = compressed.loglikelihood([requests.make("loglikelihood", 0, "Describe the video.", "A")])
    model, processor = compressed.model, compressed.processor
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": videos[1]},
                {"type": "text", "text": "Describe the video."},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        [chat],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"fps": 4, "max_chunks": 8},
    )
    full_length = inputs["input_ids"].shape[1]
    inputs, _ = encode_videos_first(model, processor, inputs, 0.5)
    assert inputs["input_ids"].shape[1] < full_length  # the threshold merged tokens: a shorter prompt
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1].float()
    (token,) = processor.tokenizer("A", add_special_tokens=False)["input_ids"]
    assert -score[0] == pytest.approx(float(torch.log_softmax(logits, -1)[token]), abs=1e-4)
