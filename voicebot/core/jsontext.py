"""JSON text on the chat path (websocket frames, the stored trace and its redacted copy) through
orjson, several times faster than the standard library's encoder, which was a tenth of a chat
turn's CPU (py-spy under bench/chat_load.py: every frame, and each trace encoded for redaction
and again for storage).

The text is what ``json.dumps(value, ensure_ascii=False, default=default)`` writes, without the
spaces after ``,`` and ``:``. Dataclasses and datetimes still go through ``default`` as they did
(orjson would otherwise write them its own way), dictionary keys that are not strings are written
as strings as the standard library does. Anything orjson refuses (an integer beyond 64 bits, a
lone surrogate) falls back to the standard library, so no value that was written before is
refused now. One difference remains: NaN and infinities become ``null`` (the standard library
writes ``NaN``, which is not JSON and which JSON parsers other than Python's reject).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


@functools.lru_cache(maxsize=8)
def _as_stdlib(default: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """orjson's ``default`` hook as the standard library would encode: a float subclass
    (numpy.float64, what most scores are) is a number there, not ``default``'s text."""

    def encode(value: Any) -> Any:
        if isinstance(value, float):
            return float(value)
        if default is None:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        return default(value)

    return encode


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` as compact JSON text (UTF-8 characters as they are, not \\u escapes)."""
    try:
        return orjson.dumps(value, default=_as_stdlib(default), option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, ensure_ascii=False, default=default, separators=(",", ":"))


def copy_json(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """A deep copy of ``value`` as its JSON text reads back (tuples become lists, objects
    ``default`` turns into text become that text)."""
    text = dumps(value, default=default)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what only the fallback writes (NaN beside a 65-bit integer)
        return json.loads(text)
