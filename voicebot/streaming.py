"""Sentence boundaries for streamed text: chat shows pieces at once, speech needs whole sentences.

The voice path hands each sentence to TTS as soon as it is complete, so the first sentence is
spoken while the generator is still writing the next one.
"""

from __future__ import annotations

import re

# Sentence ends in the five demo scripts, plus line breaks (numbered troubleshooting steps); a
# period right after a digit ("1. Restart the router") numbers a step and ends nothing.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])(?<!\d\.)\s+|(?<=[。！？；])|\n+")


def split_sentences(text: str) -> list[str]:
    parts = [part for part in _SENTENCE_END.split(text) if part and part.strip()]
    return parts or [text]


class SentenceAssembler:
    """Collects streamed pieces and releases complete sentences in order."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, piece: str) -> list[str]:
        self._buffer += piece
        parts = _SENTENCE_END.split(self._buffer)
        # The last part may still be growing; everything before it ended with a boundary.
        complete, self._buffer = parts[:-1], parts[-1]
        return [part.strip() for part in complete if part and part.strip()]

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []
