"""Finding 8 of issue 18: training data errors name the file and line (or the example), a string where a media
list belongs is refused, records without an assistant turn are reported, and DPO caption pairs with equal captions
are skipped and counted."""

import json

import pytest
from transformers.testing_utils import CaptureLogger

from transformers_mavors.testing_utils import build_tiny_tokenizer, tiny_processor, write_sample_video
from transformers_mavors.training import load_mavors_dataset, validation
from transformers_mavors.training import negatives as negatives_module
from transformers_mavors.training.data import MavorsPreferenceCollator, MavorsSFTCollator
from transformers_mavors.training.negatives import build_video_caption_pairs

USER = {"role": "user", "content": [{"type": "text", "text": "Describe it."}]}
REPLY = {"role": "assistant", "content": "A red square."}
SFT = {"messages": [USER, REPLY]}
PREFERENCE = {"prompt": [USER], "chosen": "right", "rejected": "wrong"}


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(build_tiny_tokenizer())


@pytest.mark.parametrize("collator_class", [MavorsSFTCollator, MavorsPreferenceCollator])
@pytest.mark.parametrize(
    "examples, error, message",
    [
        ([], ValueError, "empty batch"),
        (["not a record"], TypeError, "example 0 is a str, not a dict"),
        ("RECORD", TypeError, "takes a list of example dicts"),
        (["RECORD", 3], TypeError, "example 1 is a int"),
        ([{"videos": "a.mp4"}], TypeError, r"example 0: 'videos' must be a list, got the string 'a.mp4'"),
        ([{"images": "b.png"}], TypeError, r"'images' must be a list"),
    ],
)
def test_collators_validate_their_batch(processor, collator_class, examples, error, message):
    record = SFT if collator_class is MavorsSFTCollator else PREFERENCE
    if examples == "RECORD":
        examples = record
    elif isinstance(examples, list):
        examples = [
            record if e == "RECORD" else ({**record, **e} if isinstance(e, dict) else e) for e in examples
        ]
    with pytest.raises(error, match=message):
        collator_class(processor)(examples)


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def dumps(record) -> bytes:
    return json.dumps(record).encode()


@pytest.mark.parametrize(
    "lines, error, message",
    [
        (
            [dumps(SFT), dumps({**SFT, "videos": "a.mp4"})],
            TypeError,
            r"data.jsonl:2: 'videos' must be a list",
        ),
        ([dumps(SFT), b'{"messages": [\xff]}'], ValueError, r"data.jsonl:2 is not valid UTF-8"),
        ([dumps(SFT), dumps(SFT), b"{not json"], ValueError, r"data.jsonl:3 is not valid JSON"),
        (
            [dumps({**SFT, "images": ["a.png"]}), dumps({**SFT, "images": [7]})],
            TypeError,
            r"data.jsonl:2: column 'images' holds list \[7\]",
        ),
        (
            [
                dumps(SFT),
                dumps({"messages": [USER, {"role": "assistant", "content": [{"type": "text", "text": 5}]}]}),
            ],
            TypeError,
            r"data.jsonl:2.*'text' must be a string, got int",
        ),
    ],
)
def test_loader_errors_name_file_and_line(tmp_path, lines, error, message):
    with pytest.raises(error, match=message):
        load_mavors_dataset(write_lines(tmp_path / "data.jsonl", lines))


def test_records_without_an_assistant_turn_are_reported(tmp_path, processor):
    path = write_lines(
        tmp_path / "data.jsonl", [dumps(SFT), dumps({"messages": [USER]}), dumps({"messages": [USER]})]
    )
    with CaptureLogger(validation.logger) as captured:
        dataset = load_mavors_dataset(path)
    assert len(dataset) == 3
    assert "2 SFT record(s) have no assistant turn" in captured.out
    assert "data.jsonl:2" in captured.out and "data.jsonl:3" in captured.out
    from transformers_mavors.training import data as data_module

    data_module.logger.warning_once.cache_clear()
    with CaptureLogger(data_module.logger) as captured:
        batch = MavorsSFTCollator(processor)([{"messages": [USER]}])
    assert "no assistant turn" in captured.out and (batch["labels"] == -100).all()


@pytest.mark.parametrize(
    "captions, kept",
    [
        ({"original": "a cat", "shuffled": "a cat"}, 0),
        ({"original": "a cat", "shuffled": "A  cat "}, 0),
        ({"original": "a cat", "shuffled": "a dog"}, 2),
    ],
)
def test_caption_pairs_with_equal_captions_are_skipped_and_counted(tmp_path, captions, kept):
    for name in ("a", "b"):
        write_sample_video(tmp_path / f"{name}.mp4", num_frames=8, seed=ord(name))

    def caption_fn(path: str) -> str:
        return captions["shuffled" if "shuffled" in path else "original"]

    with CaptureLogger(negatives_module.logger) as captured:
        records = build_video_caption_pairs(
            ["a.mp4", "b.mp4"], caption_fn, tmp_path / "neg", media_root=tmp_path
        )
    assert len(records) == kept
    assert all(r["chosen"] != r["rejected"] for r in records)
    assert len(list((tmp_path / "neg").glob("*.mp4"))) == kept  # no orphan shuffled copies
    if kept == 0:
        assert "skipped 2 of 2 caption pairs" in captured.out
