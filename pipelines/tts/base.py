"""The contract every text-to-speech backend meets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np


class SpeechSynthesizer(Protocol):
    name: str

    def sample_rate(self, language: str) -> int:
        """The rate of the audio ``synthesize`` yields for this language."""
        ...

    def supports(self, language: str) -> bool: ...

    def synthesize(self, text: str, language: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 mono chunks as soon as each is ready (a sentence at most), so playback can
        start before the whole text is spoken. Runs the model off the event loop."""
        ...

    def close(self) -> None: ...
