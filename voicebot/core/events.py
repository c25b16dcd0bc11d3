"""Typed events that flow through a session pipeline.

Every event carries the session id, the turn it belongs to and a monotonic timestamp, so latency
is measured from the events themselves rather than from ad-hoc timers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the events stay importable without the models behind them
    from voicebot.core.entities import Entity
    from voicebot.dialogue.grounding import PromptFields


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
    """The language a user message is answered in, and why: the dialogue switches on it."""

    text: str
    language: str
    scores: dict[str, Any]  # by source: combined, domain, langdetect (text); spoken (a call's audio + text)
    switched: bool
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Understanding(Event):
    """What NLU made of one user message: intent ranking and extracted entities."""

    text: str
    language: str
    intent: str
    confidence: float
    ranking: list[tuple[str, float]]
    entities: tuple[Entity, ...]
    out_of_scope: bool
    # The language decision, carried on from LanguageIdentified for the dialogue.
    switched: bool
    language_reason: str = ""
    language_scores: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BotReply(Event):
    """The policy's decision for a turn, before it is streamed and stored."""

    text: str
    language: str
    path: str
    handoff: bool = False
    handoff_reason: str | None = None  # policy.HandoffReason: asked, accepted_offer, sentiment, repeated_failure, identification_failed
    streamed: bool = False  # its text already went out as chunks (generation)
    intent: str | None = None  # stored with the turn
    turn_index: int | None = None  # the turn's index in the conversation (what it is stored under)
    prompt_fields: PromptFields | None = None  # what a generator may use to phrase it; None: no phrasing
    # Generated text went out (or was due to) and was rejected: by the grounding guard, or cut by a
    # generation failure. ``text`` is then the template answer, and a voice must say it instead.
    generated_rejected: bool = False
    # ``text`` starts with this notice, in ``notice_language`` (not ``language``): "I can't answer
    # in Italian yet..." before an English answer. Its chunks carry its language, so a voice says it
    # in Italian and the answer in English.
    notice: str | None = None
    notice_language: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BotTextChunk(Event):
    text: str
    index: int
    language: str  # what a voice speaks it in
    sentence: bool = False  # a whole sentence (template path), not a token piece (generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class BotMessage(Event):
    """The final bot message of a turn; emitted only after the turn is stored."""

    text: str
    language: str
    trace: dict[str, Any]  # the operator's record; read it for display, never to decide
    handoff: bool = False
    handoff_reason: str | None = None  # as on BotReply
    generated_rejected: bool = False  # as on BotReply: ``text`` replaces the generated text streamed before it
    intent: str | None = None  # the turn's intent, as stored (a phone channel hangs up after "goodbye")


@dataclass(frozen=True, slots=True, kw_only=True)
class BotAudioChunk(Event):
    pcm: bytes
    sample_rate: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfTurn(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(Event):
    code: str
    message: str


# voice call status: what a call tells its caller while it runs; each transport renders them in
# its own wire format (the WebRTC channel as JSON on its data channel). SpeechStarted (above) is
# the caller starting to talk; BotMessage (above) is the bot's answer of a turn.


@dataclass(frozen=True, slots=True, kw_only=True)
class UserTranscript(Event):
    """What the caller said, as recognised, and the language the turn is answered in."""

    text: str
    language: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupted(Event):
    """The caller talked over the bot: its audio stopped at once. ``delivered`` is what the caller
    really heard of the turn's answer (stored with the turn); ``turn_id`` is empty when no turn
    was answering yet."""

    delivered: str
    pipeline_cancelled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Backchannel(Event):
    """Short speech over the bot ("mm", "ok"): neither a turn nor an interruption."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NoSpeech(Event):
    """The caller made sound the recogniser found no words in: no turn follows."""

    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstAudio(Event):
    """The turn's first audio went to the caller: latency after the end of their turn, and of TTS
    after the first reply text was ready."""

    after_end_of_turn_ms: float
    tts_first_chunk_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnLatency(Event):
    """Where a turn's voice-to-voice time went on the server, once its first audio frame went out
    (or, for a sink that does not say when it plays, once the first audio was queued).

    ``marks`` are ``time.monotonic()`` values (CLOCK_MONOTONIC: comparable with a caller's clock
    on the same machine): speech_seen (the last voiced frame reached the endpointer), end_of_turn,
    asr_submitted/asr_started/asr_finished, recognised, message (first reply text), first_audio
    (first synthesised chunk), first_frame_out. ``hops_ms`` are the differences; ``details`` the
    recognition's CPU time and speculative work, the endpointing decision, the leading silence
    trimmed from the synthesised audio."""

    marks: dict[str, float]
    hops_ms: dict[str, float]
    details: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class BotSpeaking(Event):
    """The bot started (``on``) or finished speaking an answer."""

    on: bool


# human agents (voicebot.agents): what a person at the console sends into a customer's session.


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentMessage(Event):
    """A human agent's reply, already stored with the conversation; a channel shows it as from
    a person, not the bot."""

    text: str
    agent: str  # the agent's display name
    turn_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentNotice(Event):
    """The conversation's hand-off changed: an agent ``joined``, ``returned`` it to the bot or
    ``closed`` it. ``text`` is what the customer is told, in their language (may be empty)."""

    status: str
    agent: str
    text: str = ""
    language: str = ""
