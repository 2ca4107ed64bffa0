"""Training data: a JSONL / `datasets` format for conversations with videos and images, and the collators.

Record format (one JSON object per line; see `docs/training.md`):

```json
{"messages": [
   {"role": "user", "content": [{"type": "video", "path": "clips/0001.mp4"},
                                {"type": "text", "text": "Describe the video."}]},
   {"role": "assistant", "content": [{"type": "text", "text": "A red square moves to the right."}]}]}
```

- SFT records hold `"messages"` (any number of turns), or a conversational `"prompt"` + `"completion"`.
- Preference (DPO) records hold a conversational `"prompt"` and `"chosen"` / `"rejected"` (assistant messages
  or plain strings).
- A media block is `{"type": "video" | "image", "path": ...}`; a relative path is resolved against the
  collator's `media_root` when the batch is built. A block without a source takes the next item of the record's
  `"videos"` / `"images"` list (TRL's convention); sources may also be frames or PIL images in memory.
- `content` may be a plain string for text-only turns.

Nothing is decoded when a dataset is loaded: the collators decode the media of one batch at a time, through
`MavorsProcessor`, so a dataset of a million videos costs a million paths of memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from ..configuration_mavors import num_visual_tokens
from .validation import (
    check_examples,
    check_media_columns,
    has_assistant_turn,
    locate_column_type_conflict,
    warn_records_without_reply,
)

logger = logging.get_logger(__name__)

MEDIA_TYPES = ("image", "video")
_SOURCE_KEYS = ("path", "url")  # plus the block's own type name ("video": ..., "image": ...)
_BLOCK_KEYS = ("type", "text", "path")  # the stored schema: every block has exactly these (None when unused)
IGNORE_INDEX = -100


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------


def _normalize_content(content: Any, where: str) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, (list, tuple)):
        raise TypeError(
            f"{where}: content must be a string or a list of blocks, got {type(content).__name__}"
        )
    blocks = []
    for block in content:
        if not isinstance(block, dict) or "type" not in block:
            raise TypeError(f"{where}: a content block must be a dict with a 'type', got {block!r}")
        if block["type"] not in ("text", *MEDIA_TYPES):
            raise ValueError(
                f"{where}: block type {block['type']!r} is not one of ('text', 'image', 'video')"
            )
        if block["type"] == "text" and block.get("text") is not None and not isinstance(block["text"], str):
            raise TypeError(
                f"{where}: a text block's 'text' must be a string, got {type(block['text']).__name__}"
            )
        # `datasets` stores every block with every key; absent ones come back as None
        blocks.append({key: value for key, value in block.items() if value is not None})
    return blocks


def normalize_messages(messages: Any, where: str = "messages", default_role: str | None = None) -> list[dict]:
    """Messages as a list of `{"role", "content": [blocks]}`; a plain string becomes one `default_role` turn."""
    if isinstance(messages, str) and default_role is not None:
        messages = [{"role": default_role, "content": messages}]
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise TypeError(f"{where} must be a non-empty list of chat messages, got {messages!r:.200}")
    normalized = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise TypeError(f"{where}[{i}] must be a dict with 'role' and 'content', got {message!r:.200}")
        if message["role"] not in ("system", "user", "assistant"):
            raise ValueError(
                f"{where}[{i}]: role {message['role']!r} is not one of ('system', 'user', 'assistant')"
            )
        content = _normalize_content(message.get("content"), f"{where}[{i}]")
        normalized.append({"role": message["role"], "content": content})
    return normalized


def _storable(messages: list[dict]) -> list[dict]:
    # one schema for every block so Arrow can store the column; non-JSON sources stay in memory-only records
    return [
        {
            "role": m["role"],
            "content": [{key: block.get(key) for key in _BLOCK_KEYS} for block in m["content"]],
        }
        for m in messages
    ]


def normalize_record(record: dict, where: str = "record") -> dict:
    """Check a record's kind (SFT `messages`, SFT `prompt`/`completion`, or preference) and normalize it."""
    if not isinstance(record, dict):
        raise TypeError(f"{where} must be a dict, got {type(record).__name__}")
    check_media_columns(record, where)
    out = {key: value for key, value in record.items() if key in ("images", "videos")}
    if "messages" in record:
        out["messages"] = _storable(normalize_messages(record["messages"], f"{where}.messages"))
    elif {"prompt", "chosen", "rejected"} <= record.keys():
        out["prompt"] = _storable(normalize_messages(record["prompt"], f"{where}.prompt", "user"))
        for key in ("chosen", "rejected"):
            out[key] = _storable(normalize_messages(record[key], f"{where}.{key}", "assistant"))
    elif {"prompt", "completion"} <= record.keys():
        out["prompt"] = _storable(normalize_messages(record["prompt"], f"{where}.prompt", "user"))
        out["completion"] = _storable(
            normalize_messages(record["completion"], f"{where}.completion", "assistant")
        )
    else:
        raise ValueError(
            f"{where} has keys {sorted(record)}; expected 'messages' (SFT), 'prompt' + 'completion' (SFT) or "
            "'prompt' + 'chosen' + 'rejected' (preference)"
        )
    # TRL's trainers only skip their text-only preprocessing for datasets with an image column
    out.setdefault("images", [])
    out.setdefault("videos", [])
    return out


def _media_paths(record: dict) -> Iterable[str]:
    for key in ("messages", "prompt", "completion", "chosen", "rejected"):
        for message in record.get(key) or ():
            for block in message["content"]:
                if block.get("type") in MEDIA_TYPES and isinstance(block.get("path"), str):
                    yield block["path"]
    for key in ("images", "videos"):
        yield from (item for item in record.get(key) or () if isinstance(item, str))


def resolve_media_path(source: Any, media_root: str | os.PathLike | None) -> Any:
    """A relative path string joined to `media_root`; URLs, absolute paths and in-memory media unchanged."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or media_root is None or "://" in source or os.path.isabs(source):
        return source
    return os.path.join(os.fspath(media_root), source)


def load_mavors_dataset(
    data: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[dict],
    media_root: str | os.PathLike | None = None,
    check_media_exist: bool = False,
):
    """Load JSONL file(s), or a list of record dicts, as a `datasets.Dataset` in the normalized format.

    Every record is checked (kind, roles, block types) and stored with one schema; an empty `"images"` and
    `"videos"` column is added when absent, which is what TRL's trainers look for to leave multimodal columns to
    the collator. With `check_media_exist=True` every media path is checked to exist under `media_root` (a stat
    per file, no decoding), so a typo fails here and not hours into a run.
    """
    import datasets
    import pyarrow

    if isinstance(data, (str, os.PathLike)):
        data = [data]
    records: list[dict] = []
    places: list[str] = []  # where each record came from, for messages: "file:line" or "record i"
    for item in data:
        if isinstance(item, dict):
            places.append(f"record {len(records)}")
            records.append(normalize_record(item, places[-1]))
            continue
        for place, raw in _read_jsonl(item):
            places.append(place)
            records.append(normalize_record(raw, place))
    if not records:
        raise ValueError(f"no records found in {data!r}")
    warn_records_without_reply(
        [place for record, place in zip(records, places, strict=True) if not _learns_something(record)]
    )
    if check_media_exist:
        missing = [
            p
            for r in records
            for p in _media_paths(r)
            if not os.path.exists(resolve_media_path(p, media_root))
        ]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} media file(s) not found under media_root={media_root!r}, e.g. {missing[:3]}"
            )
    try:
        return datasets.Dataset.from_list(records)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError) as error:
        conflict = locate_column_type_conflict(records, places)
        raise TypeError(conflict or f"the records cannot be stored as one table: {error}") from error


def _read_jsonl(path: str | os.PathLike) -> Iterable[tuple[str, dict]]:
    """`("file:line", record)` for every non-blank line; bad UTF-8 or JSON is a `ValueError` naming the line."""
    with open(path, "rb") as handle:
        for line_number, raw_line in enumerate(handle, 1):
            place = f"{os.fspath(path)}:{line_number}"
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{place} is not valid UTF-8 ({error})") from None
            if not line.strip():
                continue
            try:
                yield place, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{place} is not valid JSON: {error}") from None


def _learns_something(record: dict) -> bool:
    """False for an SFT `messages` record without an assistant turn (preference and completion records have one)."""
    return "messages" not in record or has_assistant_turn(record["messages"])


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write records (normalized or not) as JSONL; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# Turning messages into processor inputs
# ------------------------------------------------------------------------------------------------


def split_media(
    messages: list[dict], media_root: str | os.PathLike | None, record: dict | None = None
) -> tuple[list[dict], list[Any], list[Any]]:
    """Messages for the chat template (media blocks reduced to `{"type": ...}`), and the videos and images in
    text order, relative paths resolved against `media_root`."""
    pools = {kind: list((record or {}).get(kind + "s") or ()) for kind in MEDIA_TYPES}
    media: dict[str, list] = {kind: [] for kind in MEDIA_TYPES}
    template_messages = []
    for message in messages:
        content = []
        for block in message["content"]:
            kind = block["type"]
            if kind == "text":
                content.append({"type": "text", "text": block.get("text") or ""})
                continue
            source = next((block[k] for k in (kind, *_SOURCE_KEYS) if block.get(k) is not None), None)
            if source is None:
                if not pools[kind]:
                    raise ValueError(
                        f"a {kind} block has no source ('path', 'url' or '{kind}') and the record's '{kind}s' list "
                        "has no item left for it"
                    )
                source = pools[kind].pop(0)
            media[kind].append(resolve_media_path(source, media_root))
            content.append({"type": kind})
        template_messages.append({"role": message["role"], "content": content})
    return template_messages, media["video"], media["image"]


def render_chat(processor, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The chat template's text (one placeholder per media block, not yet expanded); nothing is decoded."""
    return processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


@dataclass(frozen=True)
class SpecialTokenIds:
    """Token ids the collators need, read once from the processor's tokenizer."""

    pad: int
    image: int
    video: int
    vision_start: int
    vision_end: int
    im_start: int
    im_end: int
    assistant_header: tuple[int, ...]

    @classmethod
    def from_processor(cls, processor) -> SpecialTokenIds:
        tokenizer = processor.tokenizer
        names = (
            "<|image_pad|>",
            "<|video_pad|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|im_start|>",
            "<|im_end|>",
        )
        ids = tokenizer.convert_tokens_to_ids(list(names))
        missing = [n for n, i in zip(names, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer lacks the ChatML / vision tokens {missing} (SPEC §3.4)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with")
        # the newline that ends the header is left out: a reply starting with a newline merges with it
        header = tuple(tokenizer.encode("<|im_start|>assistant", add_special_tokens=False))
        return cls(pad, *ids, header)


# ------------------------------------------------------------------------------------------------
# Labels and media-safe truncation
# ------------------------------------------------------------------------------------------------


def assistant_token_mask(input_ids: torch.Tensor, ids: SpecialTokenIds) -> torch.Tensor:
    """Boolean `(B, L)` mask of assistant reply tokens: after each `<|im_start|>assistant` and the newline token
    that follows it, up to and including the `<|im_end|>` that closes the reply (the model must learn to stop),
    or the row's end if truncated."""
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    header = torch.tensor(ids.assistant_header, device=input_ids.device)
    for row, starts in enumerate(
        (input_ids == ids.im_start).nonzero().split((input_ids == ids.im_start).sum(1).tolist())
    ):
        tokens = input_ids[row]
        ends = (tokens == ids.im_end).nonzero().flatten()
        for start in starts[:, 1].tolist():
            stop = start + len(header)
            if stop >= tokens.numel() or not torch.equal(tokens[start:stop], header):
                continue
            stop += 1  # the header's newline
            later = ends[ends >= stop]
            end = int(later[0]) + 1 if later.numel() else tokens.numel()
            mask[row, stop:end] = True
    return mask


def build_sft_labels(batch: dict, ids: SpecialTokenIds) -> torch.Tensor:
    """`input_ids` with everything but assistant replies set to -100 (prompt, system, placeholders, padding)."""
    input_ids = batch["input_ids"]
    keep = assistant_token_mask(input_ids, ids) & batch["attention_mask"].bool()
    for token in (ids.image, ids.video, ids.vision_start, ids.vision_end):
        keep &= input_ids != token
    return input_ids.masked_fill(~keep, IGNORE_INDEX)


def _media_items(batch: dict, ids: SpecialTokenIds, merge: int) -> dict[str, list[list[tuple[int, int]]]]:
    """Per modality, per row: `(first placeholder position, token count)` of each item (image piece / video), in
    the order the packed tensors hold them."""
    result = {}
    for kind, token, grid_key in (
        ("image", ids.image, "image_grid_thw"),
        ("video", ids.video, "video_grid_thw"),
    ):
        grid = batch.get(grid_key)
        sizes = [] if grid is None else [num_visual_tokens(tuple(r), merge) for r in grid.tolist()]
        rows, cursor = [], 0
        for row_ids in batch["input_ids"]:
            positions = (row_ids == token).nonzero().flatten().tolist()
            items, used = [], 0
            while used < len(positions):
                if cursor >= len(sizes):
                    raise ValueError(
                        f"the batch has more {kind} placeholder tokens than its {grid_key} accounts for"
                    )
                items.append((positions[used], sizes[cursor]))
                used += sizes[cursor]
                cursor += 1
            if used != len(positions):
                raise ValueError(f"{kind} placeholder tokens do not split into whole items of {grid_key}")
            rows.append(items)
        if cursor != len(sizes):
            raise ValueError(
                f"{grid_key} has {len(sizes)} items but the text holds placeholders for {cursor}"
            )
        result[kind] = rows
    return result


def media_safe_cut(
    row_ids: torch.Tensor, length: int, items: list[tuple[int, int]], ids: SpecialTokenIds
) -> int:
    """Largest cut `<= length` that does not split a media item: a cut inside an item's placeholder span moves to
    before that span's `<|vision_start|>`, so an item is kept whole or dropped whole."""
    cut = length
    for start, size in items:
        if start <= cut < start + size:
            cut = start
            while cut > 0 and int(row_ids[cut - 1]) == ids.vision_start:
                cut -= 1
            break
    return cut


def truncate_batch(batch: dict, max_length: int, ids: SpecialTokenIds, merge: int = 2) -> dict:
    """Right-padded batch cut to at most `max_length` tokens per row without cutting through a media item.

    Items (videos, image pieces) whose placeholders fall beyond a row's cut are removed from the packed tensors
    (`pixel_values*`, `*_grid_thw`, `video_chunk_positions`) too, so placeholders and features still match.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be > 0, got {max_length}")
    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    lengths = attention.sum(1).tolist()
    if max(lengths) <= max_length:
        return batch
    items = _media_items(batch, ids, merge)
    cuts = []
    for row, length in enumerate(lengths):
        cut = min(length, max_length)
        for kind in MEDIA_TYPES:
            cut = media_safe_cut(input_ids[row], cut, items[kind][row], ids)
        if cut < min(length, max_length):
            logger.warning_once(
                "Truncation to max_length=%d would cut through a media item; the item and the text after it are "
                "dropped from that sample instead (raise max_length or lower fps / max_chunks to keep it).",
                max_length,
            )
        cuts.append(cut)
    width = max(cuts)
    out = dict(batch)
    positions = torch.arange(width, device=input_ids.device)
    keep = positions[None, :] < torch.tensor(cuts, device=input_ids.device)[:, None]
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.shape[:2] == input_ids.shape:
            fill = ids.pad if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
            out[key] = value[:, :width].masked_fill(~keep, fill)
    # drop the packed media of items past the cut
    for kind, pixel_key, grid_key in (
        ("image", "pixel_values", "image_grid_thw"),
        ("video", "pixel_values_videos", "video_grid_thw"),
    ):
        grid = batch.get(grid_key)
        if grid is None:
            continue
        kept = [start + size <= cut for row, cut in enumerate(cuts) for start, size in items[kind][row]]
        if all(kept):
            continue
        kept_t = torch.tensor(kept)
        patches = (grid[:, 0] * grid[:, 1] * grid[:, 2]).tolist()
        row_mask = torch.repeat_interleave(kept_t, torch.tensor(patches))
        out[pixel_key] = batch[pixel_key][row_mask.to(batch[pixel_key].device)]
        out[grid_key] = grid[kept_t.to(grid.device)]
        if kind == "video" and batch.get("video_chunk_positions") is not None:
            chunk_mask = torch.repeat_interleave(kept_t, grid[:, 0].cpu())
            out["video_chunk_positions"] = batch["video_chunk_positions"][chunk_mask.to(grid.device)]
        if not any(kept):
            out.pop(pixel_key)
            out.pop(grid_key)
            if kind == "video":
                out.pop("video_chunk_positions", None)
    return out


# ------------------------------------------------------------------------------------------------
# Collators
# ------------------------------------------------------------------------------------------------


def _batch_to_dict(processed) -> dict:
    return {key: value for key, value in dict(processed).items() if value is not None}


def _call_processor(processor, texts, videos, images, processor_kwargs) -> dict:
    kwargs = dict(processor_kwargs or {})
    kwargs.setdefault("padding", True)
    kwargs["padding_side"] = "right"
    kwargs["return_tensors"] = "pt"
    processed = processor(text=texts, videos=videos or None, images=images or None, **kwargs)
    return _batch_to_dict(processed)


def _merge_size(processor) -> int:
    for name in ("video_processor", "image_processor"):
        value = getattr(getattr(processor, name, None), "spatial_merge_size", None)
        if value:
            return int(value)
    return 2


@dataclass
class MavorsCollatorBase:
    """What both collators share: the processor, the media root, the length cap, extra processor arguments, and
    the special-token ids read from the processor (checked when the collator is built)."""

    processor: Any
    media_root: str | os.PathLike | None = None
    max_length: int | None = None
    processor_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.token_ids = SpecialTokenIds.from_processor(self.processor)
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"max_length must be a positive number of tokens or None, got {self.max_length}")


@dataclass
class MavorsSFTCollator(MavorsCollatorBase):
    """Builds SFT batches from records: decodes the batch's media, tokenizes, masks labels, truncates safely.

    Args:
        processor: a `MavorsProcessor` (tokenizer with the ChatML template, image and video processors).
        media_root: directory that relative media paths are resolved against.
        max_length: most tokens per sample; a cut never splits a video's (or image piece's) placeholder span:
            the item and what follows are dropped instead, from the text and from the packed tensors.
        processor_kwargs: extra arguments for every processor call, e.g. `{"fps": 2, "max_chunks": 16}`.

    Returns (per batch, right-padded): `input_ids`, `attention_mask`, `labels` (-100 everywhere except the
    assistant replies and their `<|im_end|>`), and the processor's media tensors (`pixel_values_videos`,
    `video_grid_thw`, `video_chunk_positions`, `pixel_values`, `image_grid_thw`) for the media present.
    """

    # raw columns this collator reads; `MavorsTrainer` keeps them when it removes unused columns
    dataset_columns = ("messages", "prompt", "completion", "images", "videos")

    def conversation(self, example: dict) -> list[dict]:
        if example.get("messages"):
            return normalize_messages(example["messages"])
        if example.get("prompt") and example.get("completion"):
            return normalize_messages(example["prompt"], "prompt", "user") + normalize_messages(
                example["completion"], "completion", "assistant"
            )
        raise ValueError(
            f"an SFT example needs 'messages' or 'prompt' + 'completion', got keys {sorted(example)}"
        )

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        check_examples(examples, type(self).__name__)
        texts, videos, images, num_replies = [], [], [], []
        for index, example in enumerate(examples):
            check_media_columns(example, f"example {index}")
            messages, example_videos, example_images = split_media(
                self.conversation(example), self.media_root, example
            )
            if not has_assistant_turn(messages):
                logger.warning_once(
                    "An SFT example has no assistant turn: nothing in it is learned (all its labels are -100)."
                )
            texts.append(render_chat(self.processor, messages))
            videos += example_videos
            images += example_images
            num_replies.append(sum(m["role"] == "assistant" for m in messages))
        batch = _call_processor(self.processor, texts, videos, images, self.processor_kwargs)
        if self.max_length is not None:
            batch = truncate_batch(batch, self.max_length, self.token_ids, _merge_size(self.processor))
        batch["labels"] = build_sft_labels(batch, self.token_ids)
        found = assistant_token_mask(batch["input_ids"], self.token_ids)
        for row, expected in enumerate(num_replies):
            if not expected or (batch["labels"][row] != IGNORE_INDEX).any():
                continue
            if self.max_length is None and not found[row].any():
                raise ValueError(
                    "no '<|im_start|>assistant' turn found in the rendered text: the labels need the ChatML chat "
                    "template of MavorsProcessor (SPEC §3.4)"
                )
            logger.warning_once(
                "A sample has no assistant token left to learn from (truncated away); it contributes nothing to "
                "the loss."
            )
        return batch


def _completion_text(processor, prompt: list[dict], completion: list[dict], prompt_text: str) -> str:
    full = render_chat(processor, prompt + completion)
    if not full.startswith(prompt_text):
        raise ValueError(
            "the chat template does not render prompt + completion as the prompt's text (with generation prompt) "
            "followed by the completion; cannot split them"
        )
    completion = full[len(prompt_text) :]
    # what the template adds after the reply's closing <|im_end|> (ChatML's newline) is not part of the answer
    end = completion.rfind("<|im_end|>")
    return completion[: end + len("<|im_end|>")] if end >= 0 else completion


@dataclass
class MavorsPreferenceCollator(MavorsCollatorBase):
    """Builds DPO batches the way TRL's `DPOTrainer` reads them, for video and image prompts.

    Rows `0..B-1` are prompt + chosen, rows `B..2B-1` prompt + rejected (same order), right-padded, with
    `completion_mask` marking the completion tokens. Each prompt's media is decoded and processed once; the
    packed tensors are then repeated for the rejected half (`pixel_values_videos`, `video_grid_thw`,
    `video_chunk_positions`, `pixel_values`, `image_grid_thw` are `cat([x, x])`).

    Args:
        processor: a `MavorsProcessor`.
        media_root: directory that relative media paths are resolved against.
        max_length: most tokens per row; only completions are cut (from the end). A prompt that alone reaches
            `max_length` is an error, since cutting it would split its media.
        processor_kwargs: extra arguments for the processor call, e.g. `{"fps": 2}`.
    """

    dataset_columns = ("prompt", "chosen", "rejected", "images", "videos")

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        check_examples(examples, type(self).__name__)
        prompt_texts, completions, videos, images = [], {"chosen": [], "rejected": []}, [], []
        for index, example in enumerate(examples):
            check_media_columns(example, f"example {index}")
            missing = {"prompt", "chosen", "rejected"} - example.keys()
            if missing:
                raise ValueError(
                    f"a preference example needs 'prompt', 'chosen', 'rejected'; missing {sorted(missing)}"
                )
            prompt, example_videos, example_images = split_media(
                normalize_messages(example["prompt"], "prompt", "user"), self.media_root, example
            )
            prompt_text = render_chat(self.processor, prompt, add_generation_prompt=True)
            prompt_texts.append(prompt_text)
            videos += example_videos
            images += example_images
            for key in completions:
                messages = normalize_messages(example[key], key, "assistant")
                if any(b["type"] != "text" for m in messages for b in m["content"]):
                    raise ValueError(f"'{key}' completions must be text only; put media in the prompt")
                completions[key].append(_completion_text(self.processor, prompt, messages, prompt_text))

        prompts = _call_processor(self.processor, prompt_texts, videos, images, self.processor_kwargs)
        tokenizer = self.processor.tokenizer
        completion_ids = tokenizer(completions["chosen"] + completions["rejected"], add_special_tokens=False)[
            "input_ids"
        ]
        prompt_lengths = prompts["attention_mask"].sum(1).tolist()
        batch_size = len(examples)

        rows, masks = [], []
        for row, completion in enumerate(completion_ids):
            prompt_len = prompt_lengths[row % batch_size]
            if self.max_length is not None:
                if prompt_len >= self.max_length:
                    raise ValueError(
                        f"a prompt has {prompt_len} tokens, at least max_length={self.max_length}: it cannot be "
                        "truncated without cutting its media; raise max_length or lower fps / max_chunks"
                    )
                completion = completion[: self.max_length - prompt_len]
            prompt_ids = prompts["input_ids"][row % batch_size, :prompt_len]
            rows.append(torch.cat([prompt_ids, torch.tensor(completion, dtype=prompt_ids.dtype)]))
            masks.append(
                torch.cat([torch.zeros(prompt_len, dtype=torch.long), torch.ones(len(completion))]).long()
            )
        width = max(r.numel() for r in rows)
        input_ids = torch.full((len(rows), width), self.token_ids.pad, dtype=rows[0].dtype)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids_row, mask_row) in enumerate(zip(rows, masks, strict=True)):
            input_ids[i, : ids_row.numel()] = ids_row
            completion_mask[i, : ids_row.numel()] = mask_row
            attention_mask[i, : ids_row.numel()] = 1

        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        for key, value in prompts.items():
            if key in batch or not isinstance(value, torch.Tensor):
                continue
            if value.shape[:2] == prompts["input_ids"].shape:
                # other per-token prompt tensors: prompt part repeated, zeros over the completion
                extra = torch.zeros((len(rows), width), dtype=value.dtype)
                for i in range(len(rows)):
                    n = prompt_lengths[i % batch_size]
                    extra[i, :n] = value[i % batch_size, :n]
                batch[key] = extra
            else:
                # packed media: the same items again for the rejected half, so both halves match placeholders
                batch[key] = torch.cat([value, value])
        return batch


__all__ = [
    "IGNORE_INDEX",
    "MEDIA_TYPES",
    "normalize_messages",
    "normalize_record",
    "resolve_media_path",
    "load_mavors_dataset",
    "write_jsonl",
    "split_media",
    "render_chat",
    "SpecialTokenIds",
    "assistant_token_mask",
    "build_sft_labels",
    "media_safe_cut",
    "truncate_batch",
    "MavorsSFTCollator",
    "MavorsPreferenceCollator",
]
