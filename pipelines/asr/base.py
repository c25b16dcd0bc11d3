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


@dataclass
class RecognitionProgress:
    """Where one recognition's time went, filled in by backends whose ``transcribe`` takes
    ``progress=``: when it was queued, when its batch started and finished on the model, and the
    CPU that batch took. CPU time holds on a loaded machine where wall time does not; a call uses
    ``started_at`` to tell a request still queued (cancelling it saves work) from one the model is
    already running (it cannot be stopped)."""

    submitted_at: float = 0.0  # time.monotonic()
    started_at: float | None = None
    finished_at: float | None = None
    thread_cpu_s: float = 0.0  # the thread that ran the batch (time.thread_time)
    process_cpu_s: float = 0.0  # the whole process over the batch: the model's worker threads too, and whatever else ran
    batch_size: int = 0

    @property
    def queued_s(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.submitted_at

    @property
    def compute_s(self) -> float | None:
        return None if self.started_at is None or self.finished_at is None else self.finished_at - self.started_at


class SpeechRecognizer(Protocol):
    name: str

    async def transcribe(self, audio: np.ndarray, language: str | None = None, allowed_languages: list[str] | None = None,
                         prior_language: str | None = None) -> Transcription:
        """Transcribe 16 kHz float32 mono audio. ``language`` forces the language (faster);
        otherwise it is detected, restricted to ``allowed_languages`` when given, and
        ``prior_language`` (the conversation's) wins unless detection is sure of another."""
        ...

    def close(self) -> None: ...
