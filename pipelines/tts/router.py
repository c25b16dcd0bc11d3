"""Which engine and voice speaks each language, as the locales say.

Every ``locales/<lang>.yaml`` may carry a ``voice:`` section (``backend: piper, voice: joe``). A
language without one, or whose backend is not available in this process, speaks with the first
language of its fallback chain (zh-tw -> zh -> en) that has a usable voice, the same chain the
framework messages use. The router is itself a SpeechSynthesizer, so the voice pipeline holds one
object; ``choose`` tells the trace which voice was used and why.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.languages import normalise_language_tag
from voicebot.core.registry import PluginError, Registry
from voicebot.dialogue.locales import Locales
from voicebot.pipelines.tts.base import SpeechSynthesizer
from voicebot.resources import locales_dir

_LOG = logging.getLogger(__name__)


class NoVoice(LookupError):
    """No language in the fallback chain has a voice on an available backend."""


@dataclass(frozen=True)
class VoiceChoice:
    language: str  # the language asked for
    locale: str  # the locale whose voice section decided (zh for zh-tw)
    backend: str
    voice: str | None
    skipped: tuple[str, ...] = field(default=())  # why earlier languages of the chain were passed over


def read_voice_sections(folder: Path) -> dict[str, dict[str, Any]]:
    """``{language: voice section}`` for every locale file that has one."""
    sections: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        voice = data.get("voice")
        if voice is None:
            continue
        if not isinstance(voice, dict) or not isinstance(voice.get("backend"), str):
            raise ValueError(f"{path}: 'voice' must be a mapping with a 'backend' name (and optionally 'voice')")
        sections[str(data.get("language", path.stem)).lower()] = voice
    return sections


def _accepts_voice(backend: SpeechSynthesizer) -> bool:
    """Backends of this package take ``voice=``; a third-party one may only know the protocol."""
    parameters = inspect.signature(backend.synthesize).parameters
    return "voice" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


class VoiceRouter:
    """Routes ``synthesize(text, language)`` to the backend and voice the locales name.

    ``backends`` maps backend names used in the locale files (``piper``, ``espeak``, ``coqui``) to
    instances. ``VoiceRouter.default()`` builds Piper and espeak-ng (when installed).
    """

    name = "router"

    class Options(BaseModel):
        """``[tts]`` settings when ``backend = "router"`` (the default)."""

        model_config = ConfigDict(extra="forbid")
        engines: dict[str, dict[str, Any]] = Field(
            default_factory=lambda: {"piper": {}, "espeak": {}},
            description="engines the locale files may name: {name: {backend = ..., options...}}; backend defaults to the name")
        locales_folder: str | None = Field(None, description="locale files with the voice sections; default: the bundled locales")

    @classmethod
    def from_options(cls, options: VoiceRouter.Options, *, registry: Registry, **_: Any) -> VoiceRouter:
        """Build each engine through the registry; one that cannot start here (espeak-ng not
        installed, say) is left out with a warning and its languages fall back along the chain."""
        backends: dict[str, SpeechSynthesizer] = {}
        for name, section in options.engines.items():
            values = dict(section)
            backend = str(values.pop("backend", name))
            try:
                backends[name] = registry.create("tts", backend, values, f"tts.engines.{name}")
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001 - an engine missing here must not stop the other voices
                _LOG.warning("tts engine %r is not available (%s); languages that name it fall back along their locale chain", name, exc)
        return cls(backends, options.locales_folder)

    def __init__(self, backends: Mapping[str, SpeechSynthesizer], locales_folder: str | os.PathLike[str] | None = None) -> None:
        folder = Path(locales_folder) if locales_folder is not None else locales_dir()
        self.backends = dict(backends)
        self._locales = Locales(folder)
        self._sections = read_voice_sections(folder)
        self._with_voice = {name: _accepts_voice(backend) for name, backend in self.backends.items()}
        self._choices: dict[str, VoiceChoice] = {}

    @classmethod
    def default(cls, locales_folder: str | os.PathLike[str] | None = None) -> VoiceRouter:
        from voicebot.pipelines.tts.espeak_backend import EspeakNotFound, EspeakSynthesizer
        from voicebot.pipelines.tts.piper_backend import PiperSynthesizer

        backends: dict[str, SpeechSynthesizer] = {"piper": PiperSynthesizer()}
        try:
            backends["espeak"] = EspeakSynthesizer()
        except EspeakNotFound as exc:
            _LOG.warning("%s; languages that name espeak fall back along their locale chain", exc)
        return cls(backends, locales_folder)

    def choose(self, language: str) -> VoiceChoice:
        code = normalise_language_tag(language)
        if code in self._choices:
            return self._choices[code]
        skipped: list[str] = []
        for locale in self._locales.chain(code):
            section = self._sections.get(locale)
            if section is None:
                skipped.append(f"{locale}: no voice section")
                continue
            backend_name, voice = section["backend"], section.get("voice")
            backend = self.backends.get(backend_name)
            if backend is None:
                skipped.append(f"{locale}: backend {backend_name!r} not available")
                continue
            if not (voice and self._with_voice[backend_name]) and not backend.supports(locale):
                skipped.append(f"{locale}: backend {backend_name!r} has no voice for it")
                continue
            choice = VoiceChoice(code, locale, backend_name, str(voice) if voice else None, tuple(skipped))
            self._choices[code] = choice
            return choice
        raise NoVoice(f"no voice for {language!r}: " + "; ".join(skipped))

    def _call_kwargs(self, choice: VoiceChoice) -> dict[str, Any]:
        return {"voice": choice.voice} if choice.voice and self._with_voice[choice.backend] else {}

    def supports(self, language: str) -> bool:
        try:
            self.choose(language)
        except NoVoice:
            return False
        return True

    def sample_rate(self, language: str) -> int:
        choice = self.choose(language)
        backend: Any = self.backends[choice.backend]
        return int(backend.sample_rate(choice.locale, **self._call_kwargs(choice)))

    async def synthesize(self, text: str, language: str) -> AsyncIterator[np.ndarray]:
        choice = self.choose(language)
        backend: Any = self.backends[choice.backend]
        # aclosing: a caller that stops listening (barge-in) stops the backend at once, not at GC.
        async with contextlib.aclosing(backend.synthesize(text, choice.locale, **self._call_kwargs(choice))) as chunks:
            async for chunk in chunks:
                yield chunk

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
