"""The contract every speech recogniser backend meets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000  # what the pipeline hands to recognisers: float32 mono in [-1, 1]


@dataclass
class Transcription:
    text: str
    language: str | None
    language_probability: float
    language_probs: dict[str, float] = field(default_factory=dict)  # over the allowed languages
    duration_s: float = 0.0
    model: str = ""
    compute_ms: float = 0.0


class SpeechRecognizer(Protocol):
    name: str

    async def transcribe(self, audio: np.ndarray, language: str | None = None, allowed_languages: list[str] | None = None,
                         prior_language: str | None = None) -> Transcription:
        """Transcribe 16 kHz float32 mono audio. ``language`` forces the language (faster);
        otherwise it is detected, restricted to ``allowed_languages`` when given, and
        ``prior_language`` (the conversation's) wins unless detection is sure of another."""
        ...

    def close(self) -> None: ...
