"""Checks on training records and batches, so bad data fails (or warns) early and says where it is.

`load_mavors_dataset` names records `file:line`; the collators name examples by their index in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

MEDIA_COLUMNS = ("images", "videos")


def check_examples(examples: Any, collator: str) -> None:
    """`ValueError` for an empty batch, `TypeError` for a batch that is not a list of dicts (naming the index)."""
    if not isinstance(examples, Sequence) or isinstance(examples, (str, bytes)):
        raise TypeError(f"{collator} takes a list of example dicts, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError(f"{collator} got an empty batch (no examples)")
    for index, example in enumerate(examples):
        if not isinstance(example, dict):
            raise TypeError(
                f"{collator}: example {index} is a {type(example).__name__}, not a dict (a dataset record)"
            )


def check_media_columns(record: dict, where: str) -> None:
    """`TypeError` unless a record's `images` / `videos` are lists (a lone string would be read letter by letter)."""
    for key in MEDIA_COLUMNS:
        value = record.get(key)
        if value is None or isinstance(value, (list, tuple)):
            continue
        if isinstance(value, str):
            raise TypeError(f"{where}: '{key}' must be a list, got the string {value!r}; write [{value!r}]")
        raise TypeError(
            f"{where}: '{key}' must be a list of media (paths or arrays), got {type(value).__name__}"
        )


def has_assistant_turn(messages: Sequence[dict]) -> bool:
    return any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)


def warn_records_without_reply(places: list[str]) -> None:
    """One warning for every SFT record that has no assistant turn: it trains on nothing."""
    if places:
        shown = ", ".join(places[:5]) + (", ..." if len(places) > 5 else "")
        logger.warning(
            "%d SFT record(s) have no assistant turn, so nothing in them is learned (their labels are all -100): %s",
            len(places),
            shown,
        )


def _type_signature(value: Any) -> Any:
    """A hashable description of a JSON value's types, as Arrow infers a column's type from it."""
    if value is None:
        return None
    if isinstance(value, dict):
        return ("struct", tuple(sorted((key, _type_signature(item)) for key, item in value.items())))
    if isinstance(value, (list, tuple)):
        inner = {_type_signature(item) for item in value} - {None}
        return ("list", tuple(sorted(map(repr, inner))))
    return type(value).__name__


def locate_column_type_conflict(records: list[dict], places: list[str]) -> str | None:
    """`"file:line: column 'x' holds <type> where earlier records hold <type>"` for the first record whose
    column types differ from the first record that has that column; `None` when every record agrees."""
    first: dict[str, tuple[Any, str]] = {}
    for record, place in zip(records, places, strict=True):
        for key, value in record.items():
            signature = _type_signature(value)
            if signature is None or signature == ("list", ()):
                continue  # empty and null values fit any column type
            if key not in first:
                first[key] = (signature, place)
            elif first[key][0] != signature:
                return f"{place}: column {key!r} holds {_describe(value)} where {first[key][1]} holds a different type"
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


__all__ = [
    "check_examples",
    "check_media_columns",
    "has_assistant_turn",
    "locate_column_type_conflict",
    "warn_records_without_reply",
]
