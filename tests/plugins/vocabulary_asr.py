"""An integrator's own speech recogniser, outside the core: any recogniser plus a domain vocabulary.

Loaded by config alone (``[asr] backend = "vocabulary_asr:VocabularyRecognizer"``). It wraps the
recogniser named by ``inner`` (built through the same registry, so a built-in name, a class path
or an entry point) and rewrites words it is known to mishear in this domain, the way call centres
correct product names ("peligro" for "pedido" on one CPU, say). It meets the contract in
voicebot/pipelines/asr/base.py.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.registry import Registry
from voicebot.pipelines.asr.base import SpeechRecognizer, Transcription


class VocabularyRecognizer:
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inner: str = Field("faster-whisper", description="the recogniser that hears the audio")
        inner_options: dict[str, Any] = Field(default_factory=dict, description="its options, as its own [asr] section would hold")
        replacements: dict[str, str] = Field(default_factory=dict, description="{misheard word: meant word}, case-insensitive")

    @classmethod
    def from_options(cls, options: VocabularyRecognizer.Options, *, registry: Registry, **_: Any) -> VocabularyRecognizer:
        inner = registry.create("asr", options.inner, options.inner_options, "asr.inner_options", registry=registry)
        return cls(inner, options.replacements)

    def __init__(self, inner: SpeechRecognizer, replacements: dict[str, str]) -> None:
        self.inner = inner
        self.replacements = {word.lower(): meant for word, meant in replacements.items()}
        self.name = f"vocabulary+{inner.name}"
        self._words = re.compile(r"\b(" + "|".join(map(re.escape, self.replacements)) + r")\b", re.IGNORECASE) if replacements else None

    def correct(self, text: str) -> str:
        if self._words is None:
            return text
        return self._words.sub(lambda match: self.replacements[match.group(0).lower()], text)

    async def transcribe(self, audio: np.ndarray, language: str | None = None, allowed_languages: list[str] | None = None,
                         prior_language: str | None = None) -> Transcription:
        heard = await self.inner.transcribe(audio, language, allowed_languages, prior_language)
        return dataclasses.replace(heard, text=self.correct(heard.text), model=self.name)

    def close(self) -> None:
        self.inner.close()
