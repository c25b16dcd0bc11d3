"""Spoken numbers as a customer means them: Whisper writes "12,345", "1 2 3 4 5" or "1, 2, 3, 4, 5."
for an order number read aloud; the dialogue's slot patterns expect "12345"."""

from __future__ import annotations

import re

_GROUPED = re.compile(r"(?<![\d.,])(\d{1,3})(?:[,.\u00a0 ](\d{3}))+(?![\d]|[.,]\d)")
# Four or more single digits, each followed by a space, a hyphen or a comma (with or without a space):
# nobody lists four one-digit quantities in a customer-service question, they read out a number.
_SPELLED = re.compile(r"(?<![\d,])(?:\d(?:, ?| |-)){3,}\d(?![\d,]\d)")


def normalise_spoken_digits(text: str) -> str:
    text = _SPELLED.sub(lambda m: re.sub(r"[ ,-]", "", m.group()), text)
    return _GROUPED.sub(lambda m: re.sub(r"[,.\u00a0 ]", "", m.group()), text)
