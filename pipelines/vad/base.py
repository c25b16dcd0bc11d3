"""The contract every voice activity detector meets.

A detector is loaded once per process and shared by every call; each call asks it for its own
``stream()``, because VAD models carry state from one frame to the next (Silero's recurrent
state) and two calls must never mix theirs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000  # what the call hands to the detector: float32 mono in [-1, 1]
FRAME_SAMPLES = 512  # 32 ms at 16 kHz: Silero's training window, and the endpointer's frame


class VadStream(Protocol):
    """Speech probability of one audio stream, frame by frame, in order."""

    def probability(self, frame: np.ndarray) -> float:
        """Probability (0..1) that this ``FRAME_SAMPLES``-sample 16 kHz float32 frame is speech."""
        ...


class VoiceActivityDetector(Protocol):
    name: str

    def stream(self) -> VadStream:
        """A fresh per-call stream sharing the loaded model."""
        ...
