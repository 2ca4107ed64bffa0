"""Serving with vLLM (docs/serving.md): greedy tokens from `vllm.LLM` and from the OpenAI-compatible server equal
`MavorsForConditionalGeneration.generate` on a tiny checkpoint.

Runs in the serving environment (`.ci/engines/serving.sh`); skipped where vLLM is not installed. One engine per
module (starting one takes 20-60 s on two cores), the server started on 127.0.0.1 by the fixture.
"""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch

vllm = pytest.importorskip("vllm")

from vllm.exceptions import VLLMValidationError  # noqa: E402

from transformers_mavors import MavorsProcessor  # noqa: E402
from transformers_mavors.integrations.serving_testing import build_tiny_serving_checkpoint  # noqa: E402
from transformers_mavors.testing_utils import write_sample_video  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

MAX_NEW_TOKENS = 8
MAX_MODEL_LEN = 1024
SERVER_START_TIMEOUT = 300
REQUEST_TIMEOUT = 120


# ------------------------------------------------------------------------------------------------
# Shared inputs and references
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mavors-serving")
    model = build_tiny_serving_checkpoint(path)
    return path, model


@pytest.fixture(scope="module")
def processor(checkpoint):
    return MavorsProcessor.from_pretrained(checkpoint[0])


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    return {
        "folder": folder,
        # 6 s at the processor's 4 fps: 24 frames, 6 chunks
        "video": str(write_sample_video(folder / "short.mp4", num_frames=48, fps=8, seed=1)),
        # 15 s: 60 frames at 4 fps, more than max_chunks (8) x 4 frames -> accelerated playback
        "long_video": str(write_sample_video(folder / "long.mp4", num_frames=120, fps=8, seed=2)),
        "other_video": str(
            write_sample_video(folder / "other.mp4", num_frames=32, height=64, width=80, seed=3)
        ),
        # 150 x 120 px: tiled into sub-images plus a thumbnail
        "image": PIL.Image.fromarray(rng.integers(0, 255, size=(120, 150, 3), dtype=np.uint8)),
        "small_image": PIL.Image.fromarray(rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)),
    }


def chat_prompt(processor, kinds: list[str], question: str = "Describe the video.") -> str:
    content = [{"type": kind} for kind in kinds] + [{"type": "text", "text": question}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


def hf_greedy(
    model, processor, prompt: str, images=None, videos=None, **processor_kwargs
) -> tuple[list[int], int]:
    """Greedy new tokens from `model.generate`, and the prompt length."""
    inputs = processor(text=prompt, images=images, videos=videos, return_tensors="pt", **processor_kwargs)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    length = inputs["input_ids"].shape[1]
    return output[0, length:].tolist(), length


# ------------------------------------------------------------------------------------------------
# Offline: vllm.LLM
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llm(checkpoint):
    engine = vllm.LLM(
        model=str(checkpoint[0]),
        dtype="float32",
        max_model_len=MAX_MODEL_LEN,
        enforce_eager=True,
        limit_mm_per_prompt={"image": 2, "video": 2},
        seed=0,
    )
    yield engine
    engine.llm_engine.engine_core.shutdown()  # stop the engine process before pytest closes its log streams


def vllm_greedy(llm, requests: list[dict]) -> list[tuple[list[int], int]]:
    params = vllm.SamplingParams(max_tokens=MAX_NEW_TOKENS, temperature=0.0)
    outputs = llm.generate(requests, params, use_tqdm=False)
    return [(list(out.outputs[0].token_ids), len(out.prompt_token_ids)) for out in outputs]


def test_video_tokens_equal_generate(llm, checkpoint, processor, media):
    prompt = chat_prompt(processor, ["video"])
    reference = hf_greedy(checkpoint[1], processor, prompt, videos=[media["video"]])
    [result] = vllm_greedy(llm, [{"prompt": prompt, "multi_modal_data": {"video": media["video"]}}])
    assert result == reference


def test_tiled_image_tokens_equal_generate(llm, checkpoint, processor, media):
    layout = processor.image_processor.get_image_layout(*media["image"].size)
    assert layout["slice_grid"] != (1, 1)  # the image really is tiled
    prompt = chat_prompt(processor, ["image"], "Describe the image.")
    reference = hf_greedy(checkpoint[1], processor, prompt, images=[media["image"]])
    [result] = vllm_greedy(llm, [{"prompt": prompt, "multi_modal_data": {"image": media["image"]}}])
    assert result == reference


def test_accelerated_playback_tokens_equal_generate(llm, checkpoint, processor, media):
    video = media["long_video"]
    positions = processor.video_processor([video])["video_chunk_positions"].tolist()
    assert len(positions) == processor.video_processor.max_chunks
    assert any(b - a > 1 for a, b in zip(positions, positions[1:], strict=False))  # chunks skip time
    prompt = chat_prompt(processor, ["video"])
    reference = hf_greedy(checkpoint[1], processor, prompt, videos=[video])
    [result] = vllm_greedy(llm, [{"prompt": prompt, "multi_modal_data": {"video": video}}])
    assert result == reference


def test_image_and_video_prompt_tokens_equal_generate(llm, checkpoint, processor, media):
    prompt = chat_prompt(processor, ["image", "video"], "What colour appears first?")
    reference = hf_greedy(checkpoint[1], processor, prompt, images=[media["image"]], videos=[media["video"]])
    request = {"prompt": prompt, "multi_modal_data": {"image": media["image"], "video": media["video"]}}
    [result] = vllm_greedy(llm, [request])
    assert result == reference


def test_batch_of_four_requests_equal_generate_one_by_one(llm, checkpoint, processor, media):
    cases = [
        (["video"], {"video": media["other_video"]}, {"videos": [media["other_video"]]}),
        (["image"], {"image": media["small_image"]}, {"images": [media["small_image"]]}),
        (
            ["video", "video"],
            {"video": [media["video"], media["other_video"]]},
            {"videos": [media["video"], media["other_video"]]},
        ),
        (
            ["image", "video"],
            {"image": media["image"], "video": media["long_video"]},
            {"images": [media["image"]], "videos": [media["long_video"]]},
        ),
    ]
    prompts = [chat_prompt(processor, kinds, f"Question {i}?") for i, (kinds, _, _) in enumerate(cases)]
    references = [
        hf_greedy(checkpoint[1], processor, p, **hf) for p, (_, _, hf) in zip(prompts, cases, strict=True)
    ]
    requests = [
        {"prompt": p, "multi_modal_data": data} for p, (_, data, _) in zip(prompts, cases, strict=True)
    ]
    assert vllm_greedy(llm, requests) == references
    assert len({tuple(tokens) for tokens, _ in references}) > 1  # the four answers are not all the same


def test_fps_processor_kwarg_changes_chunks_and_matches_generate(llm, checkpoint, processor, media):
    prompt = chat_prompt(processor, ["video"])
    results = {}
    for fps in (2.0, 4.0):
        reference = hf_greedy(checkpoint[1], processor, prompt, videos=[media["video"]], fps=fps)
        request = {
            "prompt": prompt,
            "multi_modal_data": {"video": media["video"]},
            "mm_processor_kwargs": {"fps": fps},
        }
        [results[fps]] = vllm_greedy(llm, [request])
        assert results[fps] == reference
    # 6 s: 3 chunks at 2 fps, 6 at 4 fps, 4 tokens each
    assert results[4.0][1] - results[2.0][1] == 3 * 4


def test_corrupt_video_is_a_value_error_naming_the_video(llm, processor, media):
    prompt = chat_prompt(processor, ["video"])
    with pytest.raises(ValueError, match="video"):
        vllm_greedy(llm, [{"prompt": prompt, "multi_modal_data": {"video": b"not a video at all"}}])
    # the engine keeps serving
    [result] = vllm_greedy(llm, [{"prompt": prompt, "multi_modal_data": {"video": media["other_video"]}}])
    assert len(result[0]) == MAX_NEW_TOKENS


def test_more_media_than_the_limit_is_refused(llm, processor, media):
    prompt = chat_prompt(processor, ["video"] * 3)
    with pytest.raises(VLLMValidationError, match="At most 2 video"):
        vllm_greedy(llm, [{"prompt": prompt, "multi_modal_data": {"video": [media["other_video"]] * 3}}])


# ------------------------------------------------------------------------------------------------
# The OpenAI-compatible server, started on 127.0.0.1, spoken to with the `openai` client
# ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise TimeoutError(
        f"the server did not answer within {SERVER_START_TIMEOUT} s:\n{log_path.read_text()[-4000:]}"
    )


@pytest.fixture(scope="module")
def server(checkpoint, media, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` as docs/serving.md starts it; yields its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model", str(checkpoint[0]),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", "float32",
        "--max-model-len", str(MAX_MODEL_LEN),
        "--enforce-eager",
        "--limit-mm-per-prompt", json.dumps({"image": 2, "video": 2}),
        "--allowed-local-media-path", str(media["folder"]),
        "--trust-request-mm-kwargs",
        "--seed", "0",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", timeout=REQUEST_TIMEOUT, max_retries=0)


def video_part(path: str) -> dict:
    return {"type": "video_url", "video_url": {"url": f"file://{path}"}}


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat(client, parts: list[dict], question: str = "Describe the video.", **kwargs):
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": question}]}]
    return client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=messages,
        max_tokens=MAX_NEW_TOKENS,
        temperature=0.0,
        extra_body={"return_token_ids": True, **kwargs.pop("extra_body", {})},
        **kwargs,
    )


def test_server_video_answer_equals_generate(client, checkpoint, processor, media):
    prompt = chat_prompt(processor, ["video"])
    reference, _ = hf_greedy(checkpoint[1], processor, prompt, videos=[media["video"]])
    expected_prompt = processor(text=prompt, videos=[media["video"]])["input_ids"][0]
    response = chat(client, [video_part(media["video"])]).model_dump()
    assert response["prompt_token_ids"] == list(expected_prompt)
    assert response["choices"][0]["token_ids"] == reference


def test_server_data_url_image_and_video_answer_equals_generate(client, checkpoint, processor, media):
    buffer = io.BytesIO()
    media["image"].save(buffer, format="PNG")
    with open(media["other_video"], "rb") as file:
        video_bytes = file.read()
    parts = [
        {"type": "image_url", "image_url": {"url": data_url(buffer.getvalue(), "image/png")}},
        {"type": "video_url", "video_url": {"url": data_url(video_bytes, "video/mp4")}},
    ]
    prompt = chat_prompt(processor, ["image", "video"], "What colour appears first?")
    reference, _ = hf_greedy(
        checkpoint[1], processor, prompt, images=[media["image"]], videos=[media["other_video"]]
    )
    response = chat(client, parts, "What colour appears first?").model_dump()
    assert response["choices"][0]["token_ids"] == reference


def test_server_streamed_answer_equals_the_whole_answer(client, media):
    whole = chat(client, [video_part(media["video"])]).choices[0].message.content
    stream = chat(client, [video_part(media["video"])], stream=True)
    deltas = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([delta for delta in deltas if delta]) > 1  # really streamed, in pieces
    assert "".join(deltas) == whole


def test_server_fps_processor_kwarg_changes_the_chunk_count(client, checkpoint, processor, media):
    counts = {}
    for fps in (2.0, 4.0):
        response = chat(
            client, [video_part(media["video"])], extra_body={"mm_processor_kwargs": {"fps": fps}}
        )
        ids = response.model_dump()["prompt_token_ids"]
        counts[fps] = ids.count(processor.video_token_id)
        prompt = chat_prompt(processor, ["video"])
        reference, _ = hf_greedy(checkpoint[1], processor, prompt, videos=[media["video"]], fps=fps)
        assert response.model_dump()["choices"][0]["token_ids"] == reference
    # 6 s of video: 3 chunks at 2 fps, 6 chunks at 4 fps, 4 tokens per chunk
    assert counts == {2.0: 3 * 4, 4.0: 6 * 4}


def post_chat(server: str, parts: list[dict]) -> tuple[int, dict]:
    """A raw HTTP request, to read the status code and error body the server sends."""
    body = {
        "model": json.loads(urllib.request.urlopen(server + "/v1/models", timeout=30).read())["data"][0][
            "id"
        ],
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "Describe the video."}]}],
        "max_tokens": MAX_NEW_TOKENS,
    }
    request = urllib.request.Request(
        server + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    "part, problem",
    [
        (
            {
                "type": "video_url",
                "video_url": {"url": data_url(b"\x00garbage, not a video" * 20, "video/mp4")},
            },
            "video",
        ),
        (None, "no-such-video.mp4"),
    ],
    ids=["corrupt", "missing"],
)
def test_server_bad_video_is_a_400_naming_the_problem_and_the_server_keeps_serving(
    server, media, part, problem
):
    if part is None:
        part = video_part(str(media["folder"] / "no-such-video.mp4"))
    status, body = post_chat(server, [part])
    assert status == 400, body
    assert problem in json.dumps(body)
    status, body = post_chat(server, [video_part(media["video"])])
    assert status == 200 and body["choices"][0]["message"]["content"] is not None


def test_server_more_videos_than_the_limit_is_a_400(server, media):
    status, body = post_chat(server, [video_part(media["other_video"])] * 3)
    assert status == 400
    assert "At most 2 video(s)" in body["error"]["message"]
