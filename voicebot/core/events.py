"""Typed events that flow through a session pipeline.

Every event carries the session id, the turn it belongs to and a monotonic timestamp, so latency
is measured from the events themselves rather than from ad-hoc timers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    session_id: str
    turn_id: str
    ts: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioChunk(Event):
    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStarted(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStopped(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript(Event):
    text: str
    language: str | None
    probability: float
    final: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class UserText(Event):
    text: str
    language: str | None = None  # already decided (spoken-language ID on a call)
    language_trace: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LanguageIdentified(Event):
    text: str
    language: str
    scores: dict[str, float]
    switched: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Understanding(Event):
    """What NLU made of one user message: intent ranking and extracted entities."""

    text: str
    language: str
    intent: str
    confidence: float
    ranking: list[tuple[str, float]]
    entities: list[dict[str, Any]]
    out_of_scope: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BotReply(Event):
    """The policy's decision for a turn, before it is streamed and stored."""

    text: str
    language: str
    path: str
    handoff: bool = False
    streamed: bool = False  # its text already went out as chunks (generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class BotTextChunk(Event):
    text: str
    index: int
    sentence: bool = False  # a whole sentence (template path), not a token piece (generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class BotMessage(Event):
    """The final bot message of a turn; emitted only after the turn is stored."""

    text: str
    language: str
    trace: dict[str, Any]
    handoff: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BotAudioChunk(Event):
    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Interruption(Event):
    delivered_text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfTurn(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(Event):
    code: str
    message: str
