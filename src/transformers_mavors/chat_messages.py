"""Checking chat messages before they are rendered, so a malformed chat is a typed error that names the message,
the content block and what is accepted (instead of a `KeyError`, a jinja `UndefinedError` or an `IndexError` from
deep inside the template or the processor)."""

from collections.abc import Mapping
from typing import Any

# Content block types the chat template renders, with the keys that carry each block's payload (the keys
# transformers' `ProcessorMixin.apply_chat_template` reads). OpenAI-style "image_url" blocks are converted by it.
BLOCK_KEYS = {
    "text": ("text",),
    "image": ("image", "url", "path", "base64"),
    "video": ("video", "url", "path"),
    "image_url": ("image_url",),
}
_ACCEPTED_TYPES = ", ".join(repr(kind) for kind in BLOCK_KEYS)
_MESSAGE_SHAPE = "a dict like {'role': 'user', 'content': 'a prompt' or [{'type': 'text', 'text': ...}, ...]}"


def is_batch_of_conversations(conversation: Any) -> bool:
    """True for a list of conversations (each a list of messages), as transformers tells them apart."""
    return (
        isinstance(conversation, (list, tuple))
        and len(conversation) > 0
        and isinstance(conversation[0], (list, tuple))
    )


def validate_conversation(conversation: Any, require_media: bool = True) -> None:
    """Raise `TypeError`/`ValueError` unless `conversation` is a non-empty list of well-formed messages, or a
    non-empty list of such lists. Messages need a string `role` and a `content` that is a string or a list of
    blocks `{"type": "text" | "image" | "video", ...}`. With `require_media` (the media are about to be loaded),
    image and video blocks must hold their payload; rendering the template alone accepts bare `{"type": "image"}`."""
    if isinstance(conversation, str):
        raise TypeError(
            "chat messages must be a list of messages, got a string; wrap a prompt as "
            "[{'role': 'user', 'content': prompt}]"
        )
    if not isinstance(conversation, (list, tuple)):
        raise TypeError(
            f"chat messages must be a list of messages ({_MESSAGE_SHAPE}), got {type(conversation).__name__}"
        )
    if not conversation:
        raise ValueError("chat messages are an empty list; pass at least one message")
    if is_batch_of_conversations(conversation):
        for index, messages in enumerate(conversation):
            _validate_messages(messages, f"conversation {index}, ", require_media)
    else:
        _validate_messages(conversation, "", require_media)


def _validate_messages(messages: Any, prefix: str, require_media: bool) -> None:
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"{prefix}chat messages must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise ValueError(f"{prefix}chat messages are an empty list; pass at least one message")
    for index, message in enumerate(messages):
        _validate_message(message, f"{prefix}message {index}", require_media)


def _validate_message(message: Any, where: str, require_media: bool) -> None:
    if not isinstance(message, Mapping):
        raise TypeError(f"{where} is a {type(message).__name__}; each message must be {_MESSAGE_SHAPE}")
    role = message.get("role")
    if role is None:
        raise ValueError(
            f"{where} has no 'role'; each message needs one, e.g. 'system', 'user' or 'assistant'"
        )
    if not isinstance(role, str):
        raise TypeError(
            f"{where} has a role of type {type(role).__name__}; the role must be a string such as 'user'"
        )
    content = message.get("content")
    if content is None:
        if message.get("tool_calls"):
            return
        raise ValueError(
            f"{where} (role {role!r}) has no 'content'; give a string or a list of content blocks"
        )
    if isinstance(content, str):
        return
    if not isinstance(content, (list, tuple)):
        raise TypeError(
            f"{where} has content of type {type(content).__name__}; content must be a string or a list of blocks "
            f"whose 'type' is one of {_ACCEPTED_TYPES}"
        )
    for index, block in enumerate(content):
        _validate_block(block, f"{where}, content block {index}", require_media)


def _validate_block(block: Any, where: str, require_media: bool) -> None:
    if not isinstance(block, Mapping):
        raise TypeError(
            f"{where} is a {type(block).__name__}; a block is a dict like {{'type': 'text', 'text': ...}} "
            f"with 'type' one of {_ACCEPTED_TYPES}"
        )
    kind = block.get("type")
    if kind is None:
        raise ValueError(f"{where} has no 'type'; accepted types: {_ACCEPTED_TYPES}")
    if kind not in BLOCK_KEYS:
        raise ValueError(
            f"{where} has type {kind!r}, which Mavors does not take; accepted types: {_ACCEPTED_TYPES}"
        )
    keys = BLOCK_KEYS[kind]
    present = [key for key in keys if block.get(key) is not None]
    if not present and (kind in ("text", "image_url") or require_media):
        raise ValueError(
            f"{where} is a {kind!r} block without its payload; give one of the keys {list(keys)}"
        )
    if kind == "text" and not isinstance(block["text"], str):
        raise TypeError(f"{where}: 'text' must be a string, got {type(block['text']).__name__}")


__all__ = ["BLOCK_KEYS", "is_batch_of_conversations", "validate_conversation"]
