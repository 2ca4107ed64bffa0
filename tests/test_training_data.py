"""Training data: the record format, label masking and truncation that never cuts through a media item."""

import json

import pytest
import torch
from test_training_fixtures import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    _TokenizerHolder,
    chatml,
    handmade_batch,
    image_item,
    one_torch_thread,
    tiny_model,
    tokenizer,
    video_item,
)

from transformers_mavors.training import load_mavors_dataset, normalize_record, truncate_batch
from transformers_mavors.training.data import (
    SpecialTokenIds,
    assistant_token_mask,
    build_sft_labels,
    split_media,
)

SFT_RECORD = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {
            "role": "user",
            "content": [{"type": "video", "path": "clips/a.mp4"}, {"type": "text", "text": "Describe it."}],
        },
        {"role": "assistant", "content": "A red square moves."},
        {
            "role": "user",
            "content": [{"type": "image", "path": "/abs/b.png"}, {"type": "text", "text": "And?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A blue circle."}]},
    ]
}
PREFERENCE_RECORD = {
    "prompt": [
        {"role": "user", "content": [{"type": "video", "path": "a.mp4"}, {"type": "text", "text": "Hi"}]}
    ],
    "chosen": "right",
    "rejected": [{"role": "assistant", "content": "wrong"}],
}


def ids() -> SpecialTokenIds:
    return SpecialTokenIds.from_processor(_TokenizerHolder(tokenizer()))


# ---- records ------------------------------------------------------------------------------------


def test_records_load_from_jsonl_with_one_schema_and_an_images_column(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (SFT_RECORD, SFT_RECORD)) + "\n\n")
    dataset = load_mavors_dataset(path)
    assert len(dataset) == 2 and dataset[0]["images"] == [] and dataset[0]["videos"] == []
    messages = dataset[0]["messages"]
    assert messages[2]["content"] == [{"type": "text", "text": "A red square moves.", "path": None}]
    assert messages[1]["content"][0] == {"type": "video", "text": None, "path": "clips/a.mp4"}
    preference = load_mavors_dataset([PREFERENCE_RECORD])
    assert preference[0]["chosen"] == [
        {"role": "assistant", "content": [{"type": "text", "text": "right", "path": None}]}
    ]


def test_media_paths_resolve_against_the_media_root_at_collation_time():
    record = normalize_record(SFT_RECORD)
    messages, videos, images = split_media(record["messages"], "/data/root", record)
    assert videos == ["/data/root/clips/a.mp4"] and images == ["/abs/b.png"]  # absolute paths stay
    assert messages[1]["content"] == [{"type": "video"}, {"type": "text", "text": "Describe it."}]
    # a block without a source takes the record's list (TRL's convention)
    record = normalize_record(
        {"messages": [{"role": "user", "content": [{"type": "video"}]}], "videos": ["x.mp4"]}
    )
    assert split_media(record["messages"], "/r", record)[1] == ["/r/x.mp4"]


@pytest.mark.parametrize(
    "record,error,match",
    [
        ({"text": "hi"}, ValueError, "expected 'messages'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, ValueError, "role 'robot'"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, ValueError, "'audio'"),
        ({"messages": [{"role": "user", "content": 3}]}, TypeError, "content must be"),
        ({"messages": []}, TypeError, "non-empty"),
    ],
)
def test_bad_records_raise_typed_errors_naming_the_problem(record, error, match):
    with pytest.raises(error, match=match):
        normalize_record(record)


def test_missing_media_and_bad_json_are_reported_at_load_time(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(SFT_RECORD) + "\n")
    with pytest.raises(FileNotFoundError, match="clips/a.mp4"):
        load_mavors_dataset(good, media_root=tmp_path, check_media_exist=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SFT_RECORD) + "\n{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_mavors_dataset(bad)


def test_loading_never_touches_media(tmp_path, monkeypatch):
    import av

    def no_decoding(*args, **kwargs):
        raise AssertionError("media decoded while loading")

    monkeypatch.setattr(av, "open", no_decoding)
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps(SFT_RECORD) for _ in range(500)) + "\n")
    assert len(load_mavors_dataset(path)) == 500


# ---- labels -------------------------------------------------------------------------------------


def test_labels_keep_only_assistant_replies_in_multi_turn_chats():
    tok = tokenizer()
    text = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|video_pad|><|vision_end|>What colour?<|im_end|>\n"
        "<|im_start|>assistant\nred<|im_end|>\n"
        "<|im_start|>user\nHow many shapes?<|im_end|>\n"
        "<|im_start|>assistant\nthree<|im_end|>\n"
    )
    encoded = tok([text, text[: text.index("<|im_start|>user\nHow")]], padding=True, return_tensors="pt")
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    labels = build_sft_labels(batch, ids())
    kept = [tok.decode(row[row != -100]) for row in labels]
    assert kept == ["red<|im_end|>three<|im_end|>", "red<|im_end|>"]
    # the padding of the shorter row, the user turns, the system turn and the placeholders are all -100
    assert (labels[1][batch["attention_mask"][1] == 0] == -100).all()
    assert not (labels == ids().video).any()


def test_a_reply_starting_with_a_newline_is_still_found():
    tok = tokenizer()
    encoded = tok([chatml("Hi", "", "\nred")], return_tensors="pt")
    labels = build_sft_labels(dict(encoded), ids())
    # the reply's own newline stays a label where the tokenizer keeps it apart from the header's (this one does;
    # Qwen's merges "\n\n" into one token, which is then skipped with the header)
    assert tok.decode(labels[0][labels[0] != -100]) == "\nred<|im_end|>"


def test_assistant_mask_runs_to_the_end_of_a_truncated_reply():
    tok = tokenizer()
    row = tok(chatml("Hi", "", "one two three"), return_tensors="pt")["input_ids"][:, :-4]
    mask = assistant_token_mask(row, ids())
    assert mask[0, -1] and tok.decode(row[0][mask[0]]).startswith("one")


# ---- media-safe truncation ----------------------------------------------------------------------


def _two_video_batch():
    """Row 0: two videos then an answer; row 1: text only. Returns the batch and row 0's span positions."""
    tok = tokenizer()
    rows_a, grid_a, media_a, _ = video_item(1)
    rows_b, grid_b, media_b, _ = video_item(2, chunks=1)
    texts = [chatml("Compare.", media_a + media_b, "right"), chatml("Hello", "", "left")]
    encoded = tok(texts, padding=True, padding_side="right", return_tensors="pt")
    batch = {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "pixel_values_videos": torch.cat([rows_a, rows_b]),
        "video_grid_thw": torch.cat([grid_a, grid_b]),
        "video_chunk_positions": torch.tensor([0, 1, 0]),
    }
    starts = (batch["input_ids"][0] == ids().vision_start).nonzero().flatten().tolist()
    return batch, starts


def test_truncation_inside_a_video_drops_that_video_whole():
    batch, (first_start, second_start) = _two_video_batch()
    cut_inside_second = second_start + 3
    out = truncate_batch(batch, cut_inside_second, ids())
    assert out["attention_mask"][0].sum() == second_start  # cut moved before the second <|vision_start|>
    assert (out["input_ids"][0] == ids().video).sum() == 8  # the first video's 2 chunks x 4 tokens
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert out["pixel_values_videos"].shape[0] == 2 * 16
    assert out["video_chunk_positions"].tolist() == [0, 1]
    assert out["attention_mask"][1].sum() == cut_inside_second  # the text-only row is cut where asked
    model = tiny_model().eval()
    with torch.no_grad():  # placeholders and features still agree, so the model accepts the batch
        model(**out)


def test_truncation_before_every_video_removes_the_video_tensors():
    batch, (first_start, _) = _two_video_batch()
    out = truncate_batch(batch, first_start + 1, ids())
    assert "pixel_values_videos" not in out and "video_grid_thw" not in out
    assert not (out["input_ids"] == ids().video).any()


def test_truncation_between_items_keeps_both_whole_and_short_rows_untouched():
    batch, (_, second_start) = _two_video_batch()
    length = int(batch["attention_mask"][0].sum())
    out = truncate_batch(batch, length - 2, ids())
    assert out["attention_mask"][0].sum() == length - 2
    assert torch.equal(out["pixel_values_videos"], batch["pixel_values_videos"])
    assert torch.equal(truncate_batch(batch, 10_000, ids())["input_ids"], batch["input_ids"])


def test_truncation_drops_image_pieces_with_their_rows():
    tok = tokenizer()
    rows_a, grid_a, media_a = image_item(1)
    rows_b, grid_b, media_b = image_item(2, h=2, w=4)
    encoded = tok([chatml("Two images.", media_a + media_b, "ok")], return_tensors="pt")
    batch = {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "pixel_values": torch.cat([rows_a, rows_b]),
        "image_grid_thw": torch.cat([grid_a, grid_b]),
    }
    second_start = (batch["input_ids"][0] == ids().vision_start).nonzero().flatten().tolist()[1]
    out = truncate_batch(batch, second_start + 2, ids())
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]] and out["pixel_values"].shape[0] == 16
    labels = build_sft_labels(out, ids())
    assert (labels == -100).all()  # the answer was cut away: nothing to learn from this sample


def test_handmade_batches_match_the_collator_layout():
    batch = handmade_batch([{"kind": "video", "seed": 1}, {"kind": "image", "seed": 2}])
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "labels",
        "pixel_values_videos",
        "video_grid_thw",
        "pixel_values",
        "image_grid_thw",
    }


# ---- collators on real media, through MavorsProcessor ------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from test_training_fixtures import write_direction_videos

    root = tmp_path_factory.mktemp("media")
    videos = write_direction_videos(root, num=4)
    from PIL import Image

    Image.fromarray((torch.rand(90, 150, 3) * 255).byte().numpy()).save(root / "photo.png")
    return root, videos


def _chat(video: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": [{"type": "video", "path": video}, {"type": "text", "text": "What moves?"}],
            },
            {"role": "assistant", "content": "A red square."},
            {
                "role": "user",
                "content": [{"type": "image", "path": "photo.png"}, {"type": "text", "text": "And?"}],
            },
            {"role": "assistant", "content": "A photo of noise."},
        ]
    }


def test_sft_collator_labels_keep_only_assistant_text(media):
    from test_training_fixtures import tiny_processor

    from transformers_mavors.training import MavorsSFTCollator

    root, videos = media
    processor = tiny_processor()
    dataset = load_mavors_dataset(
        [
            _chat(videos[0][0]),
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yes"}]},
        ]
    )
    batch = MavorsSFTCollator(processor, media_root=root)([dataset[0], dataset[1]])
    decoded = [processor.tokenizer.decode(row[row != -100]) for row in batch["labels"]]
    assert decoded == ["A red square.<|im_end|>A photo of noise.<|im_end|>", "yes<|im_end|>"]
    placeholders = [ids().video, ids().image, ids().vision_start, ids().vision_end]
    assert not torch.isin(batch["labels"], torch.tensor(placeholders)).any()
    assert (batch["input_ids"] == ids().video).any() and batch["image_grid_thw"].shape[0] > 1  # tiled image
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    model = tiny_model().train()
    assert torch.isfinite(model(**batch).loss)


def test_sft_collator_rejects_a_template_without_chatml_turns():
    from test_training_fixtures import tiny_processor

    from transformers_mavors.training import MavorsSFTCollator

    processor = tiny_processor()
    processor.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'][0]['text'] }}\n{% endfor %}"
    )
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yes"}]}
    with pytest.raises(ValueError, match="ChatML"):
        MavorsSFTCollator(processor)([example])


def test_sft_collator_decodes_only_the_media_of_its_batch(media, monkeypatch):
    import av
    from test_training_fixtures import tiny_processor

    from transformers_mavors.training import MavorsSFTCollator

    root, videos = media
    opened = []
    real_open = av.open

    def counting_open(source, *args, **kwargs):
        opened.append(str(source))
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    dataset = load_mavors_dataset([_chat(path) for path, _ in videos])
    collator = MavorsSFTCollator(tiny_processor(), media_root=root)
    assert opened == []  # loading and building the collator decode nothing
    collator([dataset[1], dataset[2]])
    assert sorted(set(opened)) == sorted(str(root / videos[i][0]) for i in (1, 2))


def test_sft_collator_truncation_never_cuts_through_a_video(media):
    from test_training_fixtures import tiny_processor

    from transformers_mavors.training import MavorsSFTCollator

    root, videos = media
    processor = tiny_processor()
    examples = load_mavors_dataset([_chat(videos[0][0])])
    full = MavorsSFTCollator(processor, media_root=root)([examples[0]])
    video_positions = (full["input_ids"][0] == ids().video).nonzero().flatten()
    start, end = int(video_positions[0]), int(video_positions[-1])
    cut = (start + end) // 2
    batch = MavorsSFTCollator(processor, media_root=root, max_length=cut)([examples[0]])
    assert batch["input_ids"].shape[1] == start - 1  # stops before the video's <|vision_start|>
    assert "pixel_values_videos" not in batch and "pixel_values" not in batch
    kept = MavorsSFTCollator(processor, media_root=root, max_length=end + 8)([examples[0]])
    assert (kept["input_ids"] == ids().video).sum() == (full["input_ids"] == ids().video).sum()
    assert torch.equal(kept["pixel_values_videos"], full["pixel_values_videos"])
    assert "pixel_values" not in kept  # the image came after the cut
    with torch.no_grad():
        tiny_model().eval()(**kept)


def test_preference_collator_duplicates_media_for_chosen_then_rejected(media):
    from test_training_fixtures import preference_records, tiny_processor

    from transformers_mavors.training import MavorsPreferenceCollator

    root, videos = media
    processor = tiny_processor()
    records = preference_records(videos[:2])
    records[1]["rejected"] = "No."  # completions of different lengths
    dataset = load_mavors_dataset(records)
    batch = MavorsPreferenceCollator(processor, media_root=root)([dataset[0], dataset[1]])
    tok = processor.tokenizer
    completions = [
        tok.decode(row[mask.bool()])
        for row, mask in zip(batch["input_ids"], batch["completion_mask"], strict=True)
    ]
    assert completions == [
        records[0]["chosen"] + "<|im_end|>",
        records[1]["chosen"] + "<|im_end|>",
        records[0]["rejected"] + "<|im_end|>",
        "No.<|im_end|>",
    ]
    prompt_lengths = (batch["completion_mask"].argmax(1)).tolist()
    for row in range(2):  # the same prompt tokens in both halves
        n = prompt_lengths[row]
        assert torch.equal(batch["input_ids"][row, :n], batch["input_ids"][row + 2, :n])
    half = batch["pixel_values_videos"].shape[0] // 2
    assert torch.equal(batch["pixel_values_videos"][:half], batch["pixel_values_videos"][half:])
    assert batch["video_grid_thw"].shape[0] == 4 and batch["video_chunk_positions"].numel() == 8
    assert (batch["attention_mask"].sum(1) == (batch["input_ids"] != ids().pad).sum(1)).all()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
        assert tiny_model().eval()(**inputs).logits.shape[0] == 4


def test_preference_collator_cuts_completions_and_refuses_to_cut_prompts(media):
    from test_training_fixtures import preference_records, tiny_processor

    from transformers_mavors.training import MavorsPreferenceCollator

    root, videos = media
    example = load_mavors_dataset(preference_records(videos[:1]))[0]
    full = MavorsPreferenceCollator(tiny_processor(), media_root=root)([example])
    prompt_length = int(full["completion_mask"][0].argmax())
    cut = MavorsPreferenceCollator(tiny_processor(), media_root=root, max_length=prompt_length + 2)([example])
    assert cut["input_ids"].shape[1] == prompt_length + 2 and (cut["completion_mask"].sum(1) == 2).all()
    with pytest.raises(ValueError, match="cannot be truncated without cutting its media"):
        MavorsPreferenceCollator(tiny_processor(), media_root=root, max_length=prompt_length)([example])


def test_collator_passes_processor_kwargs(media):
    from test_training_fixtures import tiny_processor

    from transformers_mavors.training import MavorsSFTCollator

    root, videos = media
    example = load_mavors_dataset([_chat(videos[0][0])])[0]
    slow = MavorsSFTCollator(tiny_processor(), media_root=root, processor_kwargs={"fps": 2})([example])
    fast = MavorsSFTCollator(tiny_processor(), media_root=root, processor_kwargs={"fps": 8})([example])
    # a 2 s clip: 4 frames at 2 fps (one 4-frame chunk), 16 frames at 8 fps (four chunks)
    assert (slow["video_grid_thw"][0, 0], fast["video_grid_thw"][0, 0]) == (1, 4)


def test_trainer_keeps_the_collator_columns_with_remove_unused_columns_on(media, tmp_path):
    from test_training_fixtures import tiny_processor, training_args

    from transformers_mavors.training import MavorsSFTCollator, MavorsTrainer

    root, videos = media
    args = training_args(tmp_path, max_steps=2)
    assert args.remove_unused_columns  # the transformers default, which drops 'messages' from a plain Trainer
    trainer = MavorsTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=load_mavors_dataset([_chat(path) for path, _ in videos]),
        data_collator=MavorsSFTCollator(tiny_processor(), media_root=root),
        stage="1.5",
    )
    trainer.train()
    assert trainer.state.global_step == 2
