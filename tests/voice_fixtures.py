"""The bundled Piper voices and Whisper, and the compute budget measured with them (a pytest
plugin, see conftest.py): what every voice test speaks with, listens with and waits by."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.voice_budget import ComputeBudget, measure


@pytest.fixture(scope="module")
def voices() -> Iterator[Any]:
    from voicebot.pipelines.tts.router import VoiceRouter

    router = VoiceRouter.default()
    yield router
    router.close()


@pytest.fixture(scope="module")
def whisper() -> Iterator[Any]:
    from voicebot.pipelines.asr.faster_whisper_backend import FasterWhisperRecognizer

    recognizer = FasterWhisperRecognizer("base")
    yield recognizer
    recognizer.close()


@pytest.fixture(scope="module")
def budget(voices: Any, whisper: Any) -> ComputeBudget:
    """One recognition and one synthesis, timed on this machine now: the unit of every wait."""
    return asyncio.run(measure(whisper, voices))
