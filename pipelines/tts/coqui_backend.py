"""Coqui TTS models (VITS, XTTS, ...) from a local folder or a Coqui model name, GPU when present.

Coqui is the way to give a language a natural voice that Piper lacks: train or download a model
once, point a locale at its folder. coqui-tts 0.28 refuses to import unless ``torchaudio`` and
``torchcodec`` are importable, but the PyPI builds of both are CUDA builds that fail to load beside
the CPU torch these machines use, and VITS inference never calls them (they serve training and
audio file I/O). So when either import fails, coqui is imported with a stand-in module that names
the problem if anything touches it; the stand-in is removed from ``sys.modules`` afterwards so
other libraries (silero-vad probes for torchaudio) still see the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.machinery
import os
import sys
import threading
import types
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.sentences import split_sentences

_CHECKPOINT_NAMES = ("model.pth", "best_model.pth", "model_file.pth", "checkpoint.pth")
_IMPORT_LOCK = threading.Lock()
# Coqui's multilingual models name Chinese "zh-cn"; everything else uses our codes.
_DEFAULT_LANGUAGE_NAMES = {"zh": "zh-cn", "zh-tw": "zh-cn"}


class CoquiModelNotAvailable(FileNotFoundError):
    """The model is neither a local folder nor (offline) already downloaded."""


class _Unavailable(types.ModuleType):
    """Stands in for a library coqui imports at module level but VITS inference never uses."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)
        self._reason = reason

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise AttributeError(
            f"{self.__name__}.{attribute} is unavailable ({self._reason}); the Coqui backend supports models whose "
            f"inference does not need {self.__name__} (e.g. VITS)"
        )


@contextlib.contextmanager
def _stand_ins(names: Iterable[str]) -> Iterator[None]:
    added: list[str] = []
    for name in names:
        if name in sys.modules:
            continue
        try:
            __import__(name)
        except Exception as exc:  # ImportError, or OSError from a CUDA-only native library
            sys.modules[name] = _Unavailable(name, f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def ensure_coqui_importable() -> None:
    """Import coqui-tts once (with stand-ins where needed); later ``import TTS...`` lines just work."""
    with _IMPORT_LOCK:
        if "TTS.api" in sys.modules:
            return
        # transformers (a coqui dependency) caches whether torchaudio exists: let it look first.
        with contextlib.suppress(ImportError):
            import transformers  # noqa: F401
        with _stand_ins(("torchaudio", "torchcodec")):
            try:
                import TTS.api  # noqa: F401
                import TTS.tts.models.vits  # noqa: F401  (imports torchaudio at module level)
                import TTS.utils.synthesizer  # noqa: F401
            except ImportError as exc:
                raise ImportError(f"the Coqui backend needs coqui-tts: pip install 'voicebot[coqui]' ({exc})") from exc


def _offline() -> bool:
    return any(os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on") for key in ("HF_HUB_OFFLINE", "VOICEBOT_OFFLINE"))


def _checkpoint_in(folder: Path) -> Path:
    for name in _CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.pth"))
    if len(found) == 1:
        return found[0]
    raise CoquiModelNotAvailable(f"Coqui model folder {folder} holds {len(found)} .pth files and none named {_CHECKPOINT_NAMES[0]}")


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CoquiSynthesizer:
    """One Coqui model per voice, loaded once; ``model`` is the default voice.

    ``model`` is a folder (``config.json`` + a ``.pth`` checkpoint) or a Coqui name such as
    ``tts_models/de/thorsten/vits``; a name that is not yet downloaded fails at once when
    ``HF_HUB_OFFLINE`` is set. ``languages`` limits what ``supports`` accepts (None: any, for a
    locale that names this backend). ``speaker`` picks a speaker of a multi-speaker model.
    """

    name = "coqui"

    class Options(BaseModel):
        """``[tts]`` (or a router engine) settings for Coqui TTS."""

        model_config = ConfigDict(extra="forbid")
        model: str = Field(description="a folder (config.json + .pth) or a Coqui model name")
        device: str = "auto"
        languages: list[str] | None = None
        speaker: str | None = None
        language_names: dict[str, str] | None = None

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str = "auto",
        *,
        languages: Iterable[str] | None = None,
        speaker: str | None = None,
        language_names: Mapping[str, str] | None = None,
    ) -> None:
        self.model = os.fspath(model)
        self.device = device
        self.languages = {code.lower() for code in languages} if languages is not None else None
        self.speaker = speaker
        self.language_names = dict(_DEFAULT_LANGUAGE_NAMES if language_names is None else language_names)
        self._loaded: dict[str, Any] = {}
        self._model_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def supports(self, language: str) -> bool:
        code = language.lower()
        return self.languages is None or code in self.languages or code.split("-")[0] in self.languages

    # ------------------------------------------------------------------ loading

    def _build(self, model: str) -> Any:
        ensure_coqui_importable()
        from TTS.api import TTS

        folder = Path(model).expanduser()
        if folder.is_dir():
            tts = TTS(model_path=str(_checkpoint_in(folder)), config_path=str(folder / "config.json"), progress_bar=False)
        elif folder.is_file():
            tts = TTS(model_path=str(folder), config_path=str(folder.parent / "config.json"), progress_bar=False)
        else:
            from trainer.io import get_user_data_dir

            cached = Path(get_user_data_dir("tts")) / model.replace("/", "--")
            if _offline() and not cached.is_dir():
                raise CoquiModelNotAvailable(
                    f"Coqui model {model!r} is not a local folder and not in {cached.parent}; offline (HF_HUB_OFFLINE=1), "
                    "so it is not downloaded: point the voice at a model folder"
                )
            tts = TTS(model_name=model, progress_bar=False)
        return tts.to(_resolve_device(self.device))

    def load(self, voice: str | os.PathLike[str] | None = None) -> Any:
        """The loaded ``TTS.api.TTS`` for ``voice`` (default: ``model``); call at start-up to warm up."""
        key = os.fspath(voice) if voice is not None else self.model
        with self._lock:
            model_lock = self._model_locks.setdefault(key, threading.Lock())
        with model_lock:  # two sessions asking at once load it once
            if key not in self._loaded:
                self._loaded[key] = self._build(key)
            return self._loaded[key]

    def sample_rate(self, language: str, voice: str | os.PathLike[str] | None = None) -> int:
        tts = self.load(voice)
        return int(tts.synthesizer.output_sample_rate)

    # ------------------------------------------------------------------ speaking

    def _speak(self, tts: Any, sentence: str, language: str, lock: threading.Lock) -> np.ndarray:
        kwargs: dict[str, Any] = {}
        if tts.is_multi_lingual:
            names = tts.languages or []
            code = language.lower()
            kwargs["language"] = next((c for c in (code, self.language_names.get(code), code.split("-")[0]) if c in names), code)
        if tts.is_multi_speaker:
            kwargs["speaker"] = self.speaker or (tts.speakers or [None])[0]
        with lock:  # one forward pass per model at a time; the GPU would serialise them anyway
            wav = tts.tts(text=sentence, split_sentences=False, **kwargs)
        samples = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
        return (samples * 32767.0).astype(np.int16)

    async def synthesize(self, text: str, language: str, voice: str | os.PathLike[str] | None = None) -> AsyncIterator[np.ndarray]:
        tts = await asyncio.to_thread(self.load, voice)
        key = os.fspath(voice) if voice is not None else self.model
        lock = self._model_locks[key]
        for sentence in split_sentences(text):
            if not sentence.strip():
                continue
            audio = await asyncio.to_thread(self._speak, tts, sentence, language, lock)
            if audio.size:
                yield audio

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()
