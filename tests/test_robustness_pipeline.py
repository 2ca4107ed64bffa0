"""Finding 7 of issue 18: misspelled pipeline arguments and bad batch sizes are errors, and the stock
`image-text-to-text` call with `images=` and a plain prompt works as it does for in-tree models."""

import PIL.Image
import pytest
import torch
from conftest import randomize_
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from transformers_mavors import MavorsForConditionalGeneration
from transformers_mavors.testing_utils import tiny_mavors_config, tiny_processor, write_sample_video

IMAGE = PIL.Image.new("RGB", (64, 48), (200, 40, 40))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("pipe_ckpt")
    torch.manual_seed(0)
    randomize_(MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)), std=0.1).save_pretrained(path)
    tiny_processor(tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(checkpoint):
    return pipeline("video-text-to-text", model=str(checkpoint))


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    return str(write_sample_video(tmp_path_factory.mktemp("media") / "clip.mp4", num_frames=8, fps=8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"video": "VIDEO", "text": "Describe."}, r"'video' \(did you mean 'videos'\?\)"),
        ({"videos": "VIDEO", "prompt": "Describe."}, r"'prompt'"),
        ({"videos": "VIDEO", "text": "Describe.", "max_new_token": 2}, r"did you mean 'max_new_tokens'"),
        ({"videos": "VIDEO", "text": "Describe.", "fsp": 4}, r"'fsp'"),
    ],
)
def test_unknown_keyword_arguments_are_a_type_error(pipe, video_path, kwargs, message):
    kwargs = {key: video_path if value == "VIDEO" else value for key, value in kwargs.items()}
    with pytest.raises(TypeError, match=message):
        pipe(**kwargs)


@pytest.mark.parametrize("batch_size", [-1, 0, 1.5, True, "2"])
def test_invalid_batch_size_is_a_value_error(pipe, batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        pipe(text=["a", "b"], batch_size=batch_size, max_new_tokens=2)


@pytest.mark.parametrize("prompts", [["Describe the image."], ["What colour?", "How many?"]])
def test_stock_image_text_to_text_with_images_and_plain_text(checkpoint, prompts):
    images = [IMAGE] * len(prompts)
    pipe = pipeline("image-text-to-text", model=str(checkpoint))
    text = prompts[0] if len(prompts) == 1 else prompts
    out = pipe(
        images=images[0] if len(prompts) == 1 else images, text=text, max_new_tokens=3, do_sample=False
    )
    out = out if len(prompts) > 1 else [out]
    # the reference: markers put in front of the plain prompt by hand, generated directly
    model = AutoModelForImageTextToText.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    for prompt, answer in zip(prompts, out, strict=True):
        inputs = processor(images=[IMAGE], text=processor.image_token + prompt, return_tensors="pt")
        ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        expected = processor.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answer = answer[0] if isinstance(answer, list) else answer
        assert answer["generated_text"].endswith(expected)
