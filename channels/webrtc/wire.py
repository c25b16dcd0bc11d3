"""The WebRTC channel's wire format: a call's typed status events as the JSON objects its "events"
data channel carries (``voicebot/web/call.html`` and ``channels/webrtc/caller.py`` read them).

The format predates the typed events and is kept as it was: one object per event, ``type`` first.
"""

from __future__ import annotations

from typing import Any

from voicebot.core.events import (
    Backchannel,
    BotMessage,
    BotSpeaking,
    Event,
    FirstAudio,
    Interrupted,
    NoSpeech,
    SpeechStarted,
    TurnLatency,
    UserTranscript,
)


def render(event: Event) -> dict[str, Any] | None:
    """The data-channel message for ``event``; None for events a caller is not told about."""
    match event:
        case SpeechStarted():
            return {"type": "speech_started"}
        case UserTranscript():
            return {"type": "user_transcript", "text": event.text, "language": event.language}
        case BotMessage():
            return {"type": "bot_message", "turn_id": event.turn_id, "text": event.text, "language": event.language,
                    "handoff": event.handoff, "trace": event.trace}
        case BotSpeaking():
            return {"type": "bot_speaking", "on": event.on}
        case FirstAudio():
            return {"type": "first_audio", "turn_id": event.turn_id, "after_end_of_turn_ms": event.after_end_of_turn_ms,
                    "tts_first_chunk_ms": event.tts_first_chunk_ms}
        case Interrupted():
            return {"type": "interrupted", "turn_id": event.turn_id or None, "delivered": event.delivered,
                    "pipeline_cancelled": event.pipeline_cancelled}
        case TurnLatency():
            return {"type": "turn_latency", "turn_id": event.turn_id, "marks": event.marks, "hops_ms": event.hops_ms,
                    "details": event.details}
        case Backchannel():
            return {"type": "backchannel"}
        case NoSpeech():
            return {"type": "no_speech", "duration_s": event.duration_s}
    return None
