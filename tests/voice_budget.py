"""How long voice tests wait, derived from what this machine computes right now.

A fixed timeout is a guess about one machine: too short on a slow or busy CPU (the suite then
fails on a freshly provisioned machine), needlessly long on a fast one. Instead each voice test
module measures, at set-up, one recognition and one synthesis of a test sentence with the same
models the bot uses, and waits a generous multiple of that plus the audio's own duration (audio is
played in real time, whatever the CPU). A floor covers what does not scale with compute (ICE and
DTLS on loopback, the event loop's scheduling).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicebot.voice.audio import resample

END_OF_TURN_S = 1.2  # voice.turns: the longest end-of-turn silence (incomplete_turn_silence_ms)
MEASURED_TEXT = "What is your return policy?"


@dataclass(frozen=True)
class ComputeBudget:
    recognition_s: float  # one warm recognition of the test sentence (language detection on)
    synthesis_s: float  # one warm synthesis of the test sentence
    cold_s: float = 0.0  # the first synthesis and recognition, with the models' lazy loading
    factor: float = 15.0  # headroom for a machine that gets busier than when it was measured
    floor_s: float = 10.0

    @property
    def unit_s(self) -> float:
        """One turn's model work: a recognition and a synthesis."""
        return self.recognition_s + self.synthesis_s

    def turn(self, audio_s: float = 0.0, turns: int = 1) -> float:
        """Seconds until the bot has answered ``turns`` turns, from when ``audio_s`` seconds of the
        caller's speech start playing."""
        return audio_s + END_OF_TURN_S + max(self.floor_s, self.factor * turns * self.unit_s)

    def startup(self) -> float:
        """Seconds for a voice server to start: it loads these models and more (NLU, storage)."""
        return max(6 * self.floor_s, self.factor * self.cold_s)

    def setup(self) -> float:
        """Seconds for a call to connect (signalling, ICE, DTLS) or a page to load."""
        return max(self.floor_s, self.factor * self.unit_s)

    def settle(self) -> float:
        """Seconds to wait before asserting that something did *not* happen (noise made no turn,
        a backchannel made no interruption): long enough for a turn's recognition to have run."""
        return END_OF_TURN_S + max(1.0, 3 * self.unit_s)

    def __str__(self) -> str:
        return f"recognition {self.recognition_s:.2f} s, synthesis {self.synthesis_s:.2f} s -> a turn waits {self.turn():.1f} s"


async def measure(recognizer: Any, voices: Any, text: str = MEASURED_TEXT, language: str = "en") -> ComputeBudget:
    """Time one synthesis and one recognition of ``text`` (each after a warm-up run, so loading
    is not counted: the server under test loaded its models before it reported healthy)."""
    synthesis: list[float] = []
    audio = np.zeros(0, dtype=np.int16)
    for _ in range(2):
        started = time.perf_counter()
        audio = np.concatenate([chunk async for chunk in voices.synthesize(text, language)])
        synthesis.append(time.perf_counter() - started)
    speech = resample(audio, voices.sample_rate(language), 16_000).astype(np.float32) / 32768.0
    recognition: list[float] = []
    for _ in range(2):
        started = time.perf_counter()
        await recognizer.transcribe(speech, None, ["en", "zh", "es", "de", "fr"])
        recognition.append(time.perf_counter() - started)
    return ComputeBudget(recognition_s=recognition[-1], synthesis_s=synthesis[-1], cold_s=recognition[0] + synthesis[0])
