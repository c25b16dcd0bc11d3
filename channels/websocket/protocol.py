"""The websocket chat protocol's client messages, validated (see docs/protocol.md)."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Start(_Message):
    type: Literal["start"]
    language: str | None = Field(None, max_length=35)
    user_id: str | None = Field(None, max_length=128)


class Resume(_Message):
    type: Literal["resume"]
    token: str = Field(min_length=8, max_length=256)


class UserMessage(_Message):
    type: Literal["message"]
    text: str
    client_id: str | None = Field(None, max_length=64)


class Typing(_Message):
    type: Literal["typing"]


class Cancel(_Message):
    type: Literal["cancel"]
    turn_id: str = Field(max_length=64)


class Ping(_Message):
    type: Literal["ping"]


class End(_Message):
    type: Literal["end"]


MAX_COMMENT_CHARS = 2000


class Feedback(_Message):
    """A rating: of one bot message (``turn_id``: -1 or 1) or of the whole conversation (1..5).

    The range depends on the target, so it is checked after parsing (``check_feedback``) and a
    bad value gets its own error code, ``invalid_rating``.
    """

    type: Literal["feedback"]
    turn_id: str | None = Field(None, min_length=1, max_length=64)
    rating: int
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)


ClientMessage = Annotated[Start | Resume | UserMessage | Typing | Cancel | Ping | End | Feedback, Field(discriminator="type")]
_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
KNOWN_TYPES = ("start", "resume", "message", "typing", "cancel", "ping", "end", "feedback")
TURN_RATINGS = (-1, 1)
CONVERSATION_RATINGS = (1, 2, 3, 4, 5)


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def parse(raw: str) -> ClientMessage:
    """Parse one text frame or raise a ProtocolError that says exactly what is wrong."""
    try:
        return _adapter.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        if first["type"] == "json_invalid":
            raise ProtocolError("invalid_json", f"not valid JSON: {first['msg']}") from None
        if first["type"] in ("union_tag_not_found", "model_attributes_type", "model_type"):
            raise ProtocolError("invalid_message", "a message must be a JSON object with a 'type' field") from None
        if first["type"] == "union_tag_invalid":
            raise ProtocolError("unknown_type", f"unknown message type; known types: {', '.join(KNOWN_TYPES)}") from None
        if any(e["loc"][:2] == ("feedback", "rating") for e in errors):
            raise ProtocolError("invalid_rating", "rating must be an integer: -1 or 1 for a message (turn_id), 1..5 for the conversation") from None
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'message'}: {e['msg']}" for e in errors)
        raise ProtocolError("invalid_message", details) from None


def check_feedback(message: Feedback) -> tuple[int, str | None]:
    """The rating, checked against its target, and the comment cleaned (None when empty)."""
    if message.turn_id is not None and message.rating not in TURN_RATINGS:
        raise ProtocolError("invalid_rating", f"a message is rated -1 (thumbs down) or 1 (thumbs up), not {message.rating}")
    if message.turn_id is None and message.rating not in CONVERSATION_RATINGS:
        raise ProtocolError("invalid_rating", f"a conversation is rated 1..5, not {message.rating}")
    comment = _CONTROL.sub("", unicodedata.normalize("NFC", message.comment)).strip() if message.comment else ""
    return message.rating, comment or None


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")


def clean_text(text: str, max_chars: int) -> str:
    """Normalise user text: NFC, no control or invisible characters, bounded length."""
    if len(text) > max_chars:
        raise ProtocolError("message_too_long", f"messages are limited to {max_chars} characters (got {len(text)})")
    cleaned = _CONTROL.sub("", unicodedata.normalize("NFC", text)).strip()
    if not cleaned:
        raise ProtocolError("empty_message", "the message has no text")
    return cleaned
