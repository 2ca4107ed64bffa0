"""Token compression before the IFA (SPEC §2.5, paper §5.4): semantics, the two-step API, pipeline and CLI."""

import math

import pytest
import torch
from conftest import image_inputs, mavors, prompt_ids, randomize_, tokens_for, video_inputs
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

from transformers_mavors import MavorsForConditionalGeneration, MavorsVisionConfig, MavorsVisionModel
from transformers_mavors.cli import build_parser
from transformers_mavors.modeling_mavors import merge_similar_chunk_tokens
from transformers_mavors.testing_utils import (
    make_sample_frames,
    tiny_processor,
    tiny_vision_config,
)

H = W = 4  # patch grid of the test videos: 2x2 = 4 tokens per chunk


@pytest.fixture
def tower():
    torch.manual_seed(0)
    return randomize_(MavorsVisionModel(tiny_vision_config()), std=0.1).eval()


def static_video(num_chunks: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A video whose chunks are all the same chunk."""
    rows, grid = video_inputs(1, H, W, seed=seed)
    return rows.repeat(num_chunks, 1), torch.tensor([[num_chunks, H, W]])


def run(tower, rows, grid, positions=None, **kwargs):
    with torch.no_grad():
        return tower(rows, grid, None if positions is None else torch.tensor(positions), **kwargs)


# ---- the merge rule on hand-made tokens ---------------------------------------------------------


def unit(degrees: float) -> torch.Tensor:
    return torch.tensor([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


def test_merge_rule_matches_a_hand_written_case():
    # 3 chunks x 2 tokens (d=2). Track 0: a, a' (5 deg from a), b (90 deg): runs [a, a'] and [b].
    # Track 1: c, d (90 deg from c), d' (5 deg from d): runs [c] and [d, d'].
    a, a2, b = unit(0), unit(5) * 2, unit(90)
    c, d, d2 = unit(180), unit(270), unit(275) * 3
    features = torch.stack([torch.stack([a, c]), torch.stack([a2, d]), torch.stack([b, d2])])
    tokens, positions = merge_similar_chunk_tokens(features, torch.tensor([5, 7, 11]), threshold=0.99)
    # ordered by starting chunk, then index; each run at its first chunk's position id, valued at its mean
    expected = torch.stack([(a + a2) / 2, c, (d + d2) / 2, b])
    assert torch.allclose(tokens, expected, atol=1e-6)
    assert positions.tolist() == [5, 5, 7, 11]


def test_runs_are_compared_with_their_running_average_not_the_last_token():
    # a slow drift, 20 degrees per chunk: each token is 20 deg from the previous one but the run's mean lags
    # behind, so with a 25-degree threshold the third token (30 deg from the mean of the first two) starts a run
    features = torch.stack([unit(0), unit(20), unit(40), unit(60)])[:, None]
    tokens, positions = merge_similar_chunk_tokens(features, torch.arange(4), math.cos(math.radians(25)))
    assert positions.tolist() == [0, 2]
    assert torch.allclose(
        tokens, torch.stack([(unit(0) + unit(20)) / 2, (unit(40) + unit(60)) / 2]), atol=1e-6
    )


def test_first_chunk_never_merges_and_zero_threshold_keeps_opposite_tokens():
    features = torch.stack([unit(0), unit(180), unit(180)])[:, None]
    tokens, positions = merge_similar_chunk_tokens(features, torch.arange(3), 0.0)
    assert positions.tolist() == [0, 1]  # cos = -1 never exceeds 0; the two equal tokens merge
    assert torch.allclose(tokens, torch.stack([unit(0), unit(180)]), atol=1e-6)


# ---- the vision model ---------------------------------------------------------------------------


def reference_ifa(tower, rows, grid, positions, threshold=None):
    """The IFA run by hand on one video: IVE, optional merge, C-RoPE ids, aggregator."""
    t, h, w = grid[0].tolist()
    with torch.no_grad():
        pooled = tower.encode_chunks(rows.view(t, h * w, -1), h, w)
        positions = torch.tensor(positions)
        if threshold is None:
            tokens, ids = pooled.flatten(0, 1), positions.repeat_interleave(pooled.shape[1])
        else:
            tokens, ids = merge_similar_chunk_tokens(pooled, positions, threshold)
        return tower.aggregator(tokens[None], ids[None])[0]


def test_no_threshold_is_exactly_the_uncompressed_model(tower):
    rows, grid = video_inputs(3, H, W)
    out = run(tower, rows, grid, [0, 2, 5])
    assert torch.equal(out.last_hidden_state, reference_ifa(tower, rows, grid, [0, 2, 5]))
    assert out.token_counts.tolist() == [tokens_for(grid)]
    assert torch.equal(
        run(tower, rows, grid, [0, 2, 5], token_compression_threshold=None).last_hidden_state,
        out.last_hidden_state,
    )


@pytest.mark.parametrize("threshold", [1.0001, 2, float("inf")])
def test_threshold_above_one_equals_no_compression(tower, threshold):
    for rows, grid in (video_inputs(3, H, W), static_video(3)):
        off = run(tower, rows, grid)
        on = run(tower, rows, grid, token_compression_threshold=threshold)
        assert torch.equal(on.last_hidden_state, off.last_hidden_state)
        assert torch.equal(on.token_counts, off.token_counts)


def test_threshold_one_merges_nothing(tower):
    rows, grid = static_video(3)  # identical chunks: cosine similarity 1, which does not exceed 1
    out = run(tower, rows, grid, token_compression_threshold=1.0)
    assert out.token_counts.tolist() == [12]
    assert torch.allclose(out.last_hidden_state, run(tower, rows, grid).last_hidden_state, atol=1e-6)


def test_static_video_merges_into_the_first_chunk(vision_config):
    torch.manual_seed(0)
    tower = randomize_(MavorsVisionModel(tiny_vision_config(ifa_num_hidden_layers=0)), std=0.1).eval()
    rows, grid = static_video(4)
    pooled = run(tower, rows, grid).last_hidden_state.view(4, 4, -1)
    out = run(tower, rows, grid, [3, 4, 5, 6], token_compression_threshold=0.99)
    assert out.token_counts.tolist() == [4]  # one chunk's worth: everything after chunk 0 merged
    # without an IFA the output is the merged tokens themselves: the average of four identical chunks
    assert torch.allclose(out.last_hidden_state, pooled.mean(0), atol=1e-6)


def test_merged_video_through_the_ifa_matches_a_manual_reference(tower):
    # chunk 1 repeats chunk 0, chunk 2 is new: chunk 1's tokens merge into chunk 0's, chunk 2 stays
    rows, _ = video_inputs(2, H, W, seed=3)
    chunks = rows.view(2, H * W, -1)
    rows = torch.cat([chunks[0], chunks[0], chunks[1]])
    grid = torch.tensor([[3, H, W]])
    out = run(tower, rows, grid, [4, 6, 9], token_compression_threshold=0.95)
    assert out.token_counts.tolist() == [8]
    expected = reference_ifa(tower, rows, grid, [4, 6, 9], threshold=0.95)
    assert torch.allclose(out.last_hidden_state, expected, atol=1e-5)
    # the kept tokens of chunk 0 carry chunk 0's position: shifting only chunk 1's id changes nothing
    moved = run(tower, rows, grid, [4, 8, 9], token_compression_threshold=0.95)
    assert torch.allclose(moved.last_hidden_state, out.last_hidden_state, atol=1e-6)


def test_images_and_single_chunk_items_are_unaffected(tower):
    image_rows, image_grid = image_inputs([(4, 4), (2, 4)])
    video_rows, video_grid = video_inputs(1, H, W)
    for rows, grid in ((image_rows, image_grid), (video_rows, video_grid)):
        off = run(tower, rows, grid)
        on = run(tower, rows, grid, token_compression_threshold=0.0)
        assert torch.equal(on.last_hidden_state, off.last_hidden_state)
        assert on.token_counts.tolist() == [tokens_for(g[None]) for g in grid]


def test_batched_videos_compress_independently(tower):
    first, second = static_video(3, seed=1), video_inputs(2, H, 6, seed=2)
    rows = torch.cat([first[0], second[0]])
    grid = torch.cat([first[1], second[1]])
    together = run(tower, rows, grid, token_compression_threshold=0.99)
    alone = [run(tower, r, g, token_compression_threshold=0.99) for r, g in (first, second)]
    assert together.token_counts.tolist() == [o.token_counts.item() for o in alone]
    assert torch.allclose(
        together.last_hidden_state, torch.cat([o.last_hidden_state for o in alone]), atol=1e-5
    )


# ---- configuration and bad values ---------------------------------------------------------------


def test_config_threshold_is_saved_and_used(tower, tmp_path):
    config = tiny_vision_config(token_compression_threshold=0.99)
    config.save_pretrained(tmp_path)
    assert MavorsVisionConfig.from_pretrained(tmp_path).token_compression_threshold == 0.99
    tower.config.token_compression_threshold = 0.99
    rows, grid = static_video(3)
    assert run(tower, rows, grid).token_counts.tolist() == [4]
    # a per-call value overrides the config; above 1 switches compression off for that call
    assert run(tower, rows, grid, token_compression_threshold=float("inf")).token_counts.tolist() == [12]


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_bad_config_threshold_is_rejected(value):
    with pytest.raises(StrictDataclassError, match="token_compression_threshold"):
        tiny_vision_config(token_compression_threshold=value)


@pytest.mark.parametrize(
    "value,error", [(-1, ValueError), (float("nan"), ValueError), ("0.9", TypeError), (True, TypeError)]
)
def test_bad_call_threshold_is_a_typed_error(tower, value, error):
    rows, grid = video_inputs(2, H, W)
    with pytest.raises(error, match="token_compression_threshold"):
        run(tower, rows, grid, token_compression_threshold=value)


# ---- processor: placeholder counts --------------------------------------------------------------


@pytest.fixture
def processor(tokenizer):
    return tiny_processor(tokenizer)


def count_pads(ids, token_id):
    return (ids == token_id).sum(-1).tolist()


def test_processor_expands_video_markers_to_given_counts(processor):
    frames = make_sample_frames(16, 56, 56)  # 4 chunks of 4 tokens
    text = ["<|video_pad|> Describe.", "Then: <|video_pad|>"]
    with_videos = processor(
        text=text,
        videos=[frames, frames[:8]],
        video_token_counts=[5, 4],
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    assert count_pads(with_videos["input_ids"], processor.video_token_id) == [5, 4]
    assert "pixel_values_videos" in with_videos
    text_only = processor(
        text=text,
        video_token_counts=torch.tensor([5, 4]),
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    assert torch.equal(text_only["input_ids"], with_videos["input_ids"])
    assert "pixel_values_videos" not in text_only


def test_resize_video_placeholders_equals_building_with_counts(processor):
    frames = make_sample_frames(16, 56, 56)
    text = ["<|video_pad|> Describe.", "Now the second clip, then <|video_pad|>"]
    options = dict(return_tensors="pt", padding=True, padding_side="left")
    full = processor(text=text, videos=[frames, frames[:8]], **options)
    resized = processor.resize_video_placeholders(full, [6, 4])
    expected = processor(text=text, video_token_counts=[6, 4], **options)
    assert torch.equal(resized["input_ids"], expected["input_ids"])
    assert torch.equal(resized["attention_mask"], expected["attention_mask"])
    assert not {"pixel_values_videos", "video_grid_thw", "video_chunk_positions"} & set(resized)
    # right padding is kept too
    right = processor.resize_video_placeholders(
        processor(text=text, videos=[frames, frames[:8]], **{**options, "padding_side": "right"}), [6, 4]
    )
    assert torch.equal(
        right["input_ids"],
        processor(text=text, video_token_counts=[6, 4], **{**options, "padding_side": "right"})["input_ids"],
    )


@pytest.mark.parametrize(
    "counts,error,match",
    [
        ([5], ValueError, "has 1 entries but the text holds 2"),
        ([5, 3], ValueError, r"video_token_counts\[1\] = 3 is impossible .* \[4, 8\]"),
        ([17, 4], ValueError, r"video_token_counts\[0\] = 17 is impossible .* \[4, 16\]"),
        ([0, 4], ValueError, ">= 1"),
        ([5.0, 4], TypeError, "list of ints"),
        (torch.tensor([5.0, 4.0]), TypeError, "integer tensor"),
    ],
)
def test_wrong_count_lists_are_typed_errors(processor, counts, error, match):
    frames = make_sample_frames(16, 56, 56)
    with pytest.raises(error, match=match):
        processor(
            text=["<|video_pad|>", "<|video_pad|>"], videos=[frames, frames[:8]], video_token_counts=counts
        )


def test_resize_rejects_counts_that_do_not_fit(processor):
    frames = make_sample_frames(16, 56, 56)
    full = processor(text="<|video_pad|> Describe.", videos=[frames], return_tensors="pt")
    with pytest.raises(ValueError, match="has 2 entries but input_ids hold 1"):
        processor.resize_video_placeholders(full, [4, 4])
    with pytest.raises(ValueError, match="exceeds the 16 placeholders"):
        processor.resize_video_placeholders(full, [17])
    with pytest.raises(ValueError, match="no text was passed"):
        processor(videos=[frames], video_token_counts=[4])


# ---- two-step generation ------------------------------------------------------------------------


@pytest.fixture
def video_model(config):
    torch.manual_seed(0)
    return randomize_(MavorsForConditionalGeneration(config), std=0.1).eval()


def test_generate_with_encoded_videos_matches_a_manual_reference(video_model, config, tokenizer):
    model = video_model
    rows, grid = static_video(3, seed=5)
    positions = torch.tensor([0, 1, 3])
    # step 1: encode with compression; the tokens kept set the prompt's placeholder count
    with torch.no_grad():
        video = model.get_video_features(
            rows, grid, positions, token_compression_threshold=0.99, return_dict=True
        )
    assert video.token_counts.tolist() == [4]
    # step 2: the prompt holds as many placeholders as tokens were kept
    ids = torch.tensor([prompt_ids(config, tokenizer, "What moves?", config.video_token_id, 4, "Answer:")])
    # step 3: generate from the encoded video
    calls = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs.get("mm_encoder_outputs") is not None),
        with_kwargs=True,
    )
    generated = model.generate(
        input_ids=ids, mm_encoder_outputs={"video": video}, max_new_tokens=6, do_sample=False
    )
    hook.remove()
    assert calls == [True] + [False] * 5  # the encoded video goes to prefill only

    # reference: compressed features computed by hand, fed as input embeddings, greedy without a cache
    tower = model.model.vision_model
    with torch.no_grad():
        pooled = tower.encode_chunks(rows.view(3, H * W, -1), H, W)
        tokens, token_ids = merge_similar_chunk_tokens(pooled, positions, 0.99)
        features = model.model.projector(tower.aggregator(tokens[None], token_ids[None])[0])
        sequence = ids
        for _ in range(6):
            embeds = model.get_input_embeddings()(sequence)
            embeds[sequence == config.video_token_id] = features
            logits = model(inputs_embeds=embeds).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)
    # the one-call form: pixel values plus a per-call threshold, on the prompt with the reduced count
    one_call = model.generate(
        input_ids=ids,
        pixel_values_videos=rows,
        video_grid_thw=grid,
        video_chunk_positions=positions,
        token_compression_threshold=0.99,
        max_new_tokens=6,
        do_sample=False,
    )
    assert torch.equal(one_call, sequence)


def test_full_placeholders_with_compression_on_name_the_fix(video_model, config, tokenizer):
    rows, grid = static_video(3)
    ids = torch.tensor([prompt_ids(config, tokenizer, "Q", config.video_token_id, tokens_for(grid), "A")])
    with pytest.raises(ValueError, match="video_token_counts"):
        video_model(
            input_ids=ids, pixel_values_videos=rows, video_grid_thw=grid, token_compression_threshold=0.99
        )


def test_beam_search_with_compressed_videos_of_different_lengths(video_model, config, tokenizer, processor):
    # two prompts whose videos compress to different counts, left padded, beams expanded per sample
    first, second = static_video(3, seed=1), video_inputs(2, H, W, seed=2)
    rows, grid = torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
    with torch.no_grad():
        video = video_model.get_video_features(rows, grid, token_compression_threshold=0.99, return_dict=True)
    counts = video.token_counts.tolist()
    assert counts[0] == 4 and counts[1] > 4
    inputs = processor(
        text=["<|video_pad|> What?", "Q: <|video_pad|> What?"],
        video_token_counts=counts,
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    out = video_model.generate(
        **inputs,
        mm_encoder_outputs={"video": video},
        num_beams=2,
        num_return_sequences=2,
        max_new_tokens=2,
        do_sample=False,
    )
    texts = ["<|video_pad|> What?", "Q: <|video_pad|> What?"]
    for index, (media, text) in enumerate(zip((first, second), texts, strict=True)):
        with torch.no_grad():
            alone = video_model.get_video_features(*media, token_compression_threshold=0.99, return_dict=True)
        single = processor(text=text, video_token_counts=alone.token_counts, return_tensors="pt")
        expected = video_model.generate(
            **single,
            mm_encoder_outputs={"video": alone},
            num_beams=2,
            num_return_sequences=2,
            max_new_tokens=2,
            do_sample=False,
        )
        assert torch.equal(out[2 * index : 2 * index + 2, -2:], expected[:, -2:])


# ---- pipeline and CLI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_path(sample_video):
    return sample_video(32)


def prompt_lengths(pipe):
    lengths, generate = [], pipe.model.generate

    def spy(**kwargs):
        lengths.append(kwargs["input_ids"].shape[1])
        return generate(**kwargs)

    pipe.model.generate = spy
    return lengths


def test_pipeline_with_the_knob_uses_fewer_prompt_tokens_and_matches_two_step(checkpoint, video_path):
    pipe = pipeline("video-text-to-text", model=str(checkpoint))
    lengths = prompt_lengths(pipe)
    options = dict(
        videos=video_path,
        text="Describe the video.",
        max_new_tokens=5,
        return_full_text=False,
        do_sample=False,
    )
    pipe(**options)
    compressed = pipe(**options, token_compression_threshold=0.9)
    assert lengths[1] < lengths[0]

    # the same answer through the documented two-step API
    model = pipe.model
    processor = pipe.processor
    chat = [
        {
            "role": "user",
            "content": [
                {"type": "video", "path": video_path},
                {"type": "text", "text": "Describe the video."},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        video = model.get_video_features(
            inputs["pixel_values_videos"],
            inputs["video_grid_thw"],
            inputs["video_chunk_positions"],
            token_compression_threshold=0.9,
            return_dict=True,
        )
    inputs = processor.resize_video_placeholders(inputs, video.token_counts)
    assert inputs["input_ids"].shape[1] == lengths[1]
    out = model.generate(**inputs, mm_encoder_outputs={"video": video}, max_new_tokens=5, do_sample=False)
    answer = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert compressed[0]["generated_text"] == answer


def test_pipeline_follows_the_checkpoint_setting(checkpoint, video_path, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    model.config.vision_config.token_compression_threshold = 0.9
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(checkpoint).save_pretrained(tmp_path)
    pipe = pipeline("video-text-to-text", model=str(tmp_path))
    lengths = prompt_lengths(pipe)
    options = dict(videos=video_path, text="Describe the video.", max_new_tokens=3, do_sample=False)
    pipe(**options)
    pipe(**options, token_compression_threshold=float("inf"))  # per call: off
    assert lengths[0] < lengths[1]
    with pytest.raises(ValueError, match="token_compression_threshold"):
        pipe(**options, token_compression_threshold=-1)


def test_cli_generate_with_compression(checkpoint, video_path):
    result = mavors(
        "generate",
        "--model",
        checkpoint,
        "--video",
        video_path,
        "--prompt",
        "Describe the video.",
        "--max-new-tokens",
        "4",
        "--token-compression-threshold",
        "0.9",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stderr.splitlines() if line.startswith("token compression"))
    kept, full = (int(word) for word in line.split("kept ")[1].split(" video")[0].split(" of "))
    assert kept < full


@pytest.mark.parametrize("value", ["-0.5", "nan", "high"])
def test_cli_rejects_bad_thresholds(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(
            [
                "generate",
                "--model",
                "m",
                "--video",
                "v.mp4",
                "--prompt",
                "p",
                "--token-compression-threshold",
                value,
            ]
        )
    assert exit_info.value.code == 2
    assert "--token-compression-threshold" in capsys.readouterr().err
