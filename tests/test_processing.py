"""MavorsProcessor: chat template, placeholder expansion, batching, save/load, builders (SPEC §3.4, §7)."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor, Qwen2Tokenizer, SiglipImageProcessorPil, SiglipVisionConfig

from transformers_mavors import MavorsForConditionalGeneration, MavorsProcessor, num_visual_tokens
from transformers_mavors._compat import SUPPORTS_SANITIZE_CONTROL_TOKENS
from transformers_mavors.processing_mavors import IMAGE_TOKEN, VIDEO_TOKEN, VISION_END, VISION_START
from transformers_mavors.testing_utils import (
    build_tiny_tokenizer,
    make_sample_frames,
    tiny_mavors_config,
    tiny_processor,
)


@pytest.fixture
def processor(tokenizer):
    return tiny_processor(tokenizer, fps=8, max_chunks=8)


@pytest.fixture(scope="module")
def video_path(sample_video):
    return sample_video(40)  # 5 s


def image(height, width, seed=0):
    return PIL.Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    )


def block(count, kind=IMAGE_TOKEN):
    return VISION_START + kind * count + VISION_END


# --- chat template -------------------------------------------------------------------------------------------


def test_chat_template_renders_chatml_with_one_marker_per_media_item(processor, video_path):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "path": str(video_path)},
                {"type": "image", "image": image(30, 30)},
                {"type": "text", "text": "What moves?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A square."}]},
        {"role": "user", "content": "Which colour?"},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{block(1, VIDEO_TOKEN)}{block(1)}What moves?<|im_end|>\n"
        "<|im_start|>assistant\nA square.<|im_end|>\n"
        "<|im_start|>user\nWhich colour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_keeps_a_given_system_prompt_and_numbers_media_on_request(processor):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "image"}]},
    ]
    prompt = processor.apply_chat_template(messages, add_vision_id=True)
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "You are a helpful assistant" not in prompt
    assert f"Picture 1: {block(1)}Video 1: {block(1, VIDEO_TOKEN)}Picture 2: {block(1)}" in prompt


def test_apply_chat_template_tokenizes_and_honours_processor_kwargs(processor, video_path):
    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "path": str(video_path)}, {"type": "text", "text": "Hi"}],
        }
    ]
    default = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    assert default["video_grid_thw"].tolist() == [[8, 4, 4]]  # 5 s at fps 8 = 40 frames, capped at 8 chunks
    assert default["video_chunk_positions"].tolist() == [
        0,
        1,
        2,
        3,
        5,
        6,
        7,
        8,
    ]  # accelerated: 40 -> 32 frames
    slower = processor.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"fps": 2, "max_chunks": 2},
    )
    assert slower["video_grid_thw"].tolist() == [[2, 4, 4]]  # 10 frames at fps 2 -> 3 chunks, capped at 2
    assert slower["video_chunk_positions"].tolist() == [0, 1]
    assert (slower["input_ids"] == processor.video_token_id).sum() == num_visual_tokens((2, 4, 4))


def test_assistant_tokens_mask_covers_only_the_assistant_reply(processor, video_path):
    messages = [
        {
            "role": "user",
            "content": [{"type": "video", "path": str(video_path)}, {"type": "text", "text": "Hi"}],
        },
        {"role": "assistant", "content": "A red square."},
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    assert processor.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "A red square.<|im_end|>"


# --- placeholder expansion -------------------------------------------------------------------------------


def test_video_marker_expands_to_the_models_token_count(processor):
    frames = make_sample_frames(9, 96, 128)
    out = processor(text=f"Look: {VIDEO_TOKEN} now", videos=[frames])
    grid = out["video_grid_thw"][0].tolist()
    assert grid == [3, 4, 4]
    expected = f"Look: {block(num_visual_tokens(grid), VIDEO_TOKEN)} now"
    assert processor.decode(out["input_ids"][0]) == expected


def test_tiled_image_layout_is_thumbnail_then_one_line_per_row_of_slices(processor):
    out = processor(text=f"{VISION_START}{IMAGE_TOKEN}{VISION_END}?", images=image(112, 224))
    # thumbnail 2x6 patches -> 3 tokens; eight 4x4-patch slices (2 rows x 4 columns) -> 4 tokens each
    row = block(4) * 4
    assert processor.decode(out["input_ids"][0]) == f"{block(3)}\n{row}\n{row}?"
    assert sum(num_visual_tokens(g) for g in out["image_grid_thw"].tolist()) == 3 + 8 * 4


def test_bare_markers_are_wrapped_and_wrapped_markers_are_not_wrapped_twice(processor):
    picture = image(40, 40)
    bare = processor(text=f"a{IMAGE_TOKEN}b", images=picture)
    wrapped = processor(text=f"a{VISION_START}{IMAGE_TOKEN}{VISION_END}b", images=picture)
    assert bare["input_ids"] == wrapped["input_ids"]
    assert processor.decode(bare["input_ids"][0]) == f"a{block(4)}b"


def test_placeholder_counts_match_grids_for_a_mixed_batch(processor, video_path):
    texts = [f"{IMAGE_TOKEN} and {VIDEO_TOKEN}", f"{VIDEO_TOKEN}{IMAGE_TOKEN}{IMAGE_TOKEN} three"]
    images = [[image(112, 224)], [image(30, 70, 1), image(200, 60, 2)]]
    videos = [[str(video_path)], [make_sample_frames(6, 40, 120)]]
    out = processor(text=texts, images=images, videos=videos, padding=True, return_tensors="pt")
    image_tokens = sum(num_visual_tokens(g) for g in out["image_grid_thw"].tolist())
    video_tokens = sum(num_visual_tokens(g) for g in out["video_grid_thw"].tolist())
    assert (out["input_ids"] == processor.image_token_id).sum() == image_tokens
    assert (out["input_ids"] == processor.video_token_id).sum() == video_tokens
    assert out["video_chunk_positions"].numel() == out["video_grid_thw"][:, 0].sum()
    assert out["pixel_values"].shape[0] == out["image_grid_thw"].prod(dim=1).sum()
    assert out["pixel_values_videos"].shape[0] == out["video_grid_thw"].prod(dim=1).sum()


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_samples_alone_with_the_requested_padding_side(processor, video_path, side):
    samples = [
        (f"{VIDEO_TOKEN} long video, short text", None, [str(video_path)]),
        (f"{IMAGE_TOKEN} an image with a longer question about it", [image(90, 160)], None),
    ]
    batch = processor(
        text=[s[0] for s in samples],
        images=[s[1] or [] for s in samples],
        videos=[s[2] or [] for s in samples],
        padding=True,
        padding_side=side,
        return_tensors="pt",
    )
    for index, (text, images, videos) in enumerate(samples):
        alone = processor(text=text, images=images, videos=videos, return_tensors="pt")
        length = alone["input_ids"].shape[1]
        mask = batch["attention_mask"][index]
        kept = slice(len(mask) - length, None) if side == "left" else slice(0, length)
        assert mask[kept].all() and mask.sum() == length
        assert torch.equal(batch["input_ids"][index, kept], alone["input_ids"][0])
        key = "pixel_values_videos" if videos else "pixel_values"
        assert torch.equal(batch[key], alone[key])
    assert (
        batch["attention_mask"].all(dim=1).any() and not batch["attention_mask"].all()
    )  # one row was padded


def test_metadata_is_returned_only_on_request(processor, video_path):
    plain = processor(text=VIDEO_TOKEN, videos=str(video_path))
    assert "video_metadata" not in plain
    rich = processor(text=VIDEO_TOKEN, videos=str(video_path), return_metadata=True)
    assert rich["video_metadata"][0].duration == pytest.approx(5.0)


def test_token_counts_from_image_sizes_match_processing(processor):
    sizes = [(112, 224), (30, 30), (400, 90)]
    counts = processor._get_num_multimodal_tokens(image_sizes=sizes)
    for (height, width), tokens, pieces in zip(
        sizes, counts.num_image_tokens, counts.num_image_patches, strict=True
    ):
        out = processor(text=IMAGE_TOKEN, images=np.zeros((height, width, 3), np.uint8))
        assert out["input_ids"][0].count(processor.image_token_id) == tokens
        assert len(out["image_grid_thw"]) == pieces


@pytest.mark.parametrize(
    ("num_frames", "height", "width", "options"),
    [
        (9, 96, 128, {}),  # 3 chunks
        (1, 40, 120, {}),  # one frame, one padded chunk
        (32, 56, 56, {}),  # exactly max_chunks * F: no acceleration
        (45, 48, 64, {}),  # accelerated: 45 frames squeezed into 8 chunks
        (45, 48, 64, {"max_chunks": 3}),  # accelerated harder, by a call option
        (20, 30, 200, {"fps": 2, "max_chunks": 2}),
    ],
)
def test_video_token_counts_from_sizes_match_processing(processor, num_frames, height, width, options):
    counts = processor._get_num_multimodal_tokens(video_sizes=[(num_frames, height, width)], **options)
    frames = make_sample_frames(num_frames, height, width)  # frames taken as already at the processor's fps
    out = processor(text=VIDEO_TOKEN, videos=[frames], return_metadata=True, **options)
    assert counts.num_video_tokens == [out["input_ids"][0].count(processor.video_token_id)]
    metadata = out["video_metadata"][0]
    assert (metadata.playback_speed > 1) == (num_frames > options.get("max_chunks", 8) * 4)


def test_token_counts_for_images_and_videos_together(processor):
    counts = processor._get_num_multimodal_tokens(
        image_sizes=[(112, 224)], video_sizes=[(9, 96, 128), (4, 56, 56)]
    )
    assert counts.num_image_tokens == [3 + 8 * 4] and counts.num_image_patches == [9]
    assert counts.num_video_tokens == [num_visual_tokens((3, 4, 4)), num_visual_tokens((1, 4, 4))]
    assert processor._get_num_multimodal_tokens().num_video_tokens is None


def test_mm_token_type_ids_mark_image_and_video_placeholders(processor):
    text = [f"a {IMAGE_TOKEN} b {VIDEO_TOKEN}", f"{VIDEO_TOKEN} c"]
    videos = [make_sample_frames(5, 56, 56), make_sample_frames(2, 56, 56)]
    out = processor(
        text=text,
        images=[image(112, 224)],
        videos=videos,
        padding=True,
        return_tensors="pt",
        return_mm_token_type_ids=True,
    )
    ids, types = out["input_ids"], out["mm_token_type_ids"]
    assert types.shape == ids.shape
    expected = torch.zeros_like(ids)
    expected[ids == processor.image_token_id] = 1
    expected[ids == processor.video_token_id] = 2
    assert torch.equal(types, expected) and (types == 1).sum() == 3 + 8 * 4
    assert "mm_token_type_ids" not in processor(text=text[1], videos=videos[1])


def test_start_and_end_tokens_are_exposed_for_images_and_videos(processor, tokenizer):
    for kind in ("image", "video"):
        assert getattr(processor, f"{kind}_start_token") == VISION_START
        assert getattr(processor, f"{kind}_end_token") == VISION_END
        assert getattr(processor, f"{kind}_start_token_id") == tokenizer.convert_tokens_to_ids(VISION_START)
        assert getattr(processor, f"{kind}_end_token_id") == tokenizer.convert_tokens_to_ids(VISION_END)
    # what an engine builds from them is one wrapped marker, expanded like the chat template's
    wrapped = processor.image_start_token + processor.image_token + processor.image_end_token
    assert (
        processor(text=wrapped, images=image(40, 40))["input_ids"]
        == processor(text=IMAGE_TOKEN, images=image(40, 40))["input_ids"]
    )


def _tiled_chat(video_path):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image(112, 224)},  # tiled: thumbnail + 2 x 4 slices
                {"type": "text", "text": "and"},
                {"type": "video", "path": str(video_path)},
                {"type": "image", "image": image(40, 40, seed=1)},
                {"type": "text", "text": "What happens?"},
            ],
        }
    ]


def test_replacement_offsets_rebuild_the_input_ids_from_the_template_prompt(processor, video_path):
    """vLLM's convention: replacements are applied at the markers of the prompt the chat template wrapped."""
    messages = _tiled_chat(video_path)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    out = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"return_text_replacement_offsets": True},
    )
    offsets = out["text_replacement_offsets"][0]
    assert [entry["type"] for entry in offsets] == ["image", "video", "image"]
    rebuilt, last = "", 0
    for entry in offsets:
        start, end = entry["span"]
        assert prompt[start:end] == entry["text"] and prompt[:start].endswith(VISION_START)
        assert not entry["replacement"].startswith(VISION_START)  # nothing doubled around the marker
        rebuilt += prompt[last:start] + entry["replacement"]
        last = end
    rebuilt += prompt[last:]
    assert processor.tokenizer(rebuilt)["input_ids"] == out["input_ids"][0]
    # token by token, as vLLM applies them: each marker token replaced by its replacement's tokens
    tokens = processor.tokenizer(prompt)["input_ids"]
    replacements = iter(
        processor.tokenizer(e["replacement"], add_special_tokens=False)["input_ids"] for e in offsets
    )
    marker_ids = (processor.image_token_id, processor.video_token_id)
    spliced = [t for token in tokens for t in (next(replacements) if token in marker_ids else [token])]
    assert spliced == out["input_ids"][0]
    # the tiled image's replacement runs from the thumbnail's pads to the last slice's
    tiled = offsets[0]["replacement"]
    assert tiled.startswith(IMAGE_TOKEN) and tiled.endswith(IMAGE_TOKEN)
    assert tiled.count(f"{VISION_END}\n{VISION_START}") == 2 and tiled.count(VISION_START) == 8


def test_replacement_offsets_of_bare_markers_carry_their_wrapping(processor):
    text = f"x{IMAGE_TOKEN}y{VISION_START}{IMAGE_TOKEN}{VISION_END}z"
    out = processor(text=text, images=[image(40, 40), image(40, 40)], return_text_replacement_offsets=True)
    bare, wrapped = out["text_replacement_offsets"][0]
    assert bare["replacement"] == block(4) and wrapped["replacement"] == IMAGE_TOKEN * 4
    expanded = processor.decode(out["input_ids"][0])
    assert expanded == f"x{block(4)}y{block(4)}z"
    for entry in (bare, wrapped):
        assert expanded[slice(*entry["new_span"])] == entry["replacement"]


@pytest.mark.skipif(
    not SUPPORTS_SANITIZE_CONTROL_TOKENS, reason="sanitize_control_tokens needs transformers >= 5.20"
)
def test_user_typed_markers_stay_text_with_sanitize_control_tokens(processor):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image(40, 40)},
                {
                    "type": "text",
                    "text": f"literal {IMAGE_TOKEN} and {VISION_START}{VIDEO_TOKEN}{VISION_END}",
                },
            ],
        }
    ]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, sanitize_control_tokens=True
    )
    ids = out["input_ids"][0]
    assert ids.count(processor.image_token_id) == 4 and ids.count(processor.video_token_id) == 0
    assert ids.count(processor.vision_start_token_id) == 1  # the template's, around the real image
    assert f"literal {IMAGE_TOKEN} and" in processor.decode(ids)
    with pytest.raises(
        ValueError, match="holds 2 <\\|image_pad\\|> marker"
    ):  # unsanitized: the typed one counts too
        processor.apply_chat_template(messages, tokenize=True, return_dict=True)


def test_model_input_names_list_what_the_processor_returns(processor, video_path):
    out = processor(text=f"{IMAGE_TOKEN}{VIDEO_TOKEN}", images=image(112, 224), videos=str(video_path))
    assert set(out) == set(processor.model_input_names)
    assert "image_slice_grid" not in out


def test_media_without_text_returns_pixels_only(processor):
    out = processor(images=[image(30, 30), image(60, 30)], videos=make_sample_frames(4, 32, 32))
    assert set(out) == {
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "video_chunk_positions",
    }


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("no marker", {"videos": "/no/such/file.mp4"}, "0 <|video_pad|> marker"),  # checked before decoding
        (f"{VIDEO_TOKEN}{VIDEO_TOKEN}", {"videos": [make_sample_frames(4, 32, 32)]}, "2 <|video_pad|>"),
        (f"{IMAGE_TOKEN}", {}, "1 <|image_pad|> marker"),
        (["a", f"b{IMAGE_TOKEN}"], {"images": [image(30, 30), image(30, 30)]}, "2 image"),
    ],
)
def test_marker_media_count_mismatch_is_a_value_error(processor, text, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|")):
        processor(text=text, **kwargs)


def test_truncation_that_cuts_placeholders_is_a_value_error(processor):
    with pytest.raises(ValueError, match="truncation"):
        processor(text=f"x {IMAGE_TOKEN}", images=image(40, 40), truncation=True, max_length=3)


def test_wrong_argument_types_are_type_errors(processor):
    with pytest.raises(TypeError):
        processor(text=[1, 2])
    with pytest.raises(TypeError):
        processor(text=VIDEO_TOKEN, videos=make_sample_frames(4, 32, 32), max_chunks="many")
    with pytest.raises(ValueError):
        processor()


def test_processor_frames_per_chunk_mismatch_with_model_config_is_a_value_error(processor, tokenizer):
    config = tiny_mavors_config(tokenizer)
    processor.check_model_config(config)  # matching: no error
    processor.video_processor.frames_per_chunk = 8
    with pytest.raises(ValueError, match="frames_per_chunk: processor 8, model 4"):
        processor.check_model_config(config)


def test_tokenizer_without_vision_tokens_is_refused(processor):
    tokenizer = _tokenizer_without_vision_tokens()
    with pytest.raises(ValueError, match="add_vision_special_tokens"):
        MavorsProcessor(processor.image_processor, processor.video_processor, tokenizer)


def test_non_video_processor_is_a_type_error(processor, tokenizer):
    with pytest.raises(TypeError, match="video_processor"):
        MavorsProcessor(processor.image_processor, processor.image_processor, tokenizer)


# --- decoding -------------------------------------------------------------------------------------------------


def test_post_process_and_batch_decode_drop_special_tokens(processor):
    ids = processor(text=["one two<|im_end|>", "three"], padding=True, return_tensors="pt")["input_ids"]
    assert processor.post_process_image_text_to_text(ids) == ["one two", "three"]
    assert processor.post_process_image_text_to_text(ids[1]) == ["three"]
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["one two", "three"]
    assert processor.post_process_image_text_to_text(ids, skip_special_tokens=False)[0].endswith("<|im_end|>")


# --- save / load and builders ---------------------------------------------------------------------------------


def test_save_and_auto_load_roundtrip_reproduces_outputs(processor, video_path, tmp_path):
    processor.image_processor.max_slices = 4
    processor.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {
        "processor_config.json",
        "chat_template.jinja",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= files
    assert not files & {"preprocessor_config.json", "video_preprocessor_config.json"}  # one processor config
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["video_processor"]["fps"] == 8 and config["image_processor"]["max_slices"] == 4

    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MavorsProcessor and loaded.chat_template == processor.chat_template
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "path": str(video_path)},
                {"type": "image", "image": image(150, 300)},
            ],
        }
    ]
    kwargs = dict(add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    expected, got = (
        processor.apply_chat_template(messages, **kwargs),
        loaded.apply_chat_template(messages, **kwargs),
    )
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


@pytest.mark.slow
def test_saved_processor_loads_with_remote_code_where_the_package_is_absent(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["transformers_mavors"] = None  # as on a machine without this package
        import numpy as np
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        out = processor(text="<|video_pad|>", videos=np.zeros((5, 32, 32, 3), np.uint8))
        print(type(processor).__module__, out["video_grid_thw"].tolist())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    module, grid = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert module.startswith("transformers_modules.") and grid == "[[2, 4, 4]]"


def _tokenizer_without_vision_tokens():
    model = json.loads(build_tiny_tokenizer().backend_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
    tokenizer.add_special_tokens({"extra_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


@pytest.fixture
def siglip_dir(tmp_path):
    path = tmp_path / "siglip"
    SiglipImageProcessorPil(
        size={"height": 56, "width": 56}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]
    ).save_pretrained(path)
    SiglipVisionConfig(
        image_size=56,
        patch_size=14,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
    ).save_pretrained(path)
    return path


def test_from_vision_text_pretrained_reads_siglip_configs(siglip_dir, tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "qwen")
    processor = MavorsProcessor.from_vision_text_pretrained(
        siglip_dir,
        tmp_path / "qwen",
        frames_per_chunk=4,
        fps=6,
        max_chunks=5,
        max_slices=3,
        max_image_pixels=10**6,
    )
    for sub in (processor.image_processor, processor.video_processor):
        assert (sub.image_size, sub.patch_size, sub.max_image_pixels) == (56, 14, 10**6)
        assert tuple(sub.image_mean) == (0.4, 0.5, 0.6) and tuple(sub.image_std) == (0.2, 0.3, 0.4)
    video = processor.video_processor
    assert (video.frames_per_chunk, video.fps, video.max_chunks, processor.image_processor.max_slices) == (
        4,
        6,
        5,
        3,
    )
    assert processor.video_token_id == tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    out = processor(images=np.zeros((56, 56, 3), np.uint8))
    torch.testing.assert_close(out["pixel_values"][0, 0], torch.tensor(-0.4 / 0.2))  # SigLIP's own mean/std


def test_from_vision_text_pretrained_adds_missing_vision_tokens(siglip_dir, tmp_path, caplog):
    qwen_tokenizer = _tokenizer_without_vision_tokens()
    qwen_tokenizer.save_pretrained(tmp_path / "qwen")
    with caplog.at_level(logging.WARNING):
        processor = MavorsProcessor.from_vision_text_pretrained(
            siglip_dir, tmp_path / "qwen", frames_per_chunk=4
        )
    assert len(processor.tokenizer) == len(qwen_tokenizer) + 4
    assert "resize_token_embeddings" in caplog.text
    out = processor(text=f"hi {IMAGE_TOKEN}", images=image(40, 40))
    assert out["input_ids"][0].count(processor.image_token_id) == 4
    assert processor.decode(out["input_ids"][0], skip_special_tokens=True) == "hi "


def test_from_vision_text_pretrained_rejects_unknown_options(siglip_dir, tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "qwen")
    with pytest.raises(TypeError, match="frame_rate"):
        MavorsProcessor.from_vision_text_pretrained(siglip_dir, tmp_path / "qwen", frame_rate=4)


# --- the contract with the model --------------------------------------------------------------------------------


def test_model_consumes_a_mixed_left_padded_batch(processor, tokenizer, video_path):
    torch.manual_seed(0)
    model = MavorsForConditionalGeneration(tiny_mavors_config(tokenizer)).eval()
    messages = [
        [
            {
                "role": "user",
                "content": [{"type": "video", "path": str(video_path)}, {"type": "text", "text": "Hi"}],
            }
        ],
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": image(112, 224)}, {"type": "text", "text": "?"}],
            }
        ],
    ]
    inputs = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": "left"},
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()
