"""Finding 6 of issue 18: malformed chat messages are typed errors naming the message, the block and what is
accepted, from the processor's `apply_chat_template` and from the pipeline."""

import PIL.Image
import pytest
import torch
from conftest import randomize_
from transformers import pipeline

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.testing_utils import tiny_mavors_config, tiny_processor

IMAGE = PIL.Image.new("RGB", (56, 56), (200, 30, 30))

BAD_CHATS = [
    pytest.param(
        [{"role": "user", "content": [{"text": "hi"}]}],
        ValueError,
        r"message 0, content block 0 has no 'type'",
        id="no type",
    ),
    pytest.param(
        [{"role": "user", "content": [{"type": "audio", "audio": "a.wav"}]}],
        ValueError,
        r"message 0, content block 0 has type 'audio'.*accepted types: 'text', 'image', 'video'",
        id="audio",
    ),
    pytest.param([{"content": "hi"}], ValueError, r"message 0 has no 'role'", id="no role"),
    pytest.param([], ValueError, "empty list", id="empty"),
    pytest.param("Describe the video.", TypeError, "got a string", id="string"),
    pytest.param(
        [{"role": "user", "content": 3}], TypeError, "message 0 has content of type int", id="int content"
    ),
    pytest.param(
        [{"role": "user", "content": {"type": "text"}}], TypeError, "content of type dict", id="dict content"
    ),
    pytest.param(
        [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "image"}]}],
        ValueError,
        r"message 1, content block 0 is a 'image' block without its payload",
        id="image without payload",
    ),
    pytest.param(
        [{"role": "user", "content": ["hi"]}], TypeError, "content block 0 is a str", id="string block"
    ),
    pytest.param(["hello"], TypeError, "message 0 is a str", id="string message"),
    pytest.param(
        [[{"role": "user", "content": "fine"}], [{"role": 1, "content": "x"}]],
        TypeError,
        "conversation 1, message 0 has a role of type int",
        id="batch",
    ),
]


@pytest.fixture(scope="module")
def processor(tokenizer):
    return tiny_processor(tokenizer)


@pytest.mark.parametrize("messages, error, message", BAD_CHATS)
def test_processor_rejects_malformed_chat(processor, messages, error, message):
    with pytest.raises(error, match=message):
        processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)


def test_processor_still_renders_valid_chat(processor):
    messages = [
        {"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "Hi"}]}
    ]
    out = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert out["image_grid_thw"].shape[0] >= 1


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("chat_ckpt")
    torch.manual_seed(0)
    randomize_(MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)), std=0.1).save_pretrained(path)
    tiny_processor(tokenizer).save_pretrained(path)
    return pipeline("video-text-to-text", model=str(path))


@pytest.mark.parametrize(
    "messages, error, message", [p for p in BAD_CHATS if p.id not in ("string", "empty", "string message")]
)
def test_pipeline_rejects_malformed_chat(pipe, messages, error, message):
    with pytest.raises(error, match=message):
        pipe(text=messages, max_new_tokens=2)


def test_unreachable_image_url_is_a_value_error(processor):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "url": "http://127.0.0.1:9/none.png"},
                {"type": "text", "text": "Hi"},
            ],
        }
    ]
    with pytest.raises(ValueError, match="127.0.0.1:9/none.png"):
        processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
