"""Serving with vLLM (docs/serving.md): greedy tokens from `vllm.LLM` and from the OpenAI-compatible server equal
`MavorsForConditionalGeneration.generate` on a tiny checkpoint.

Runs in the serving environment (`.ci/engines/serving.sh`); skipped where vLLM is not installed. One engine per
module (starting one takes 20-60 s on two cores), the server started on 127.0.0.1 by the fixture.
"""

import os

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
