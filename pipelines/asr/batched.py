"""What the Whisper backends share: language codes, audio checks, and batching through the
shared batcher for whichever event loop is running.

A backend provides ``_run_locked(requests)`` (one forward pass for a batch) and the attributes
``name``, ``languages``, ``multilingual`` and ``_model``; this base gives it the
:class:`~voicebot.pipelines.asr.base.SpeechRecognizer` methods.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from voicebot.core.batching import Batcher, BatchItem
from voicebot.core.languages import normalise_language_tag
from voicebot.pipelines.asr.base import RecognitionProgress, Transcription

_CHINESE_ALIASES = {"zh", "zh-cn", "zh-tw", "zh-hk", "zh-sg", "zh-hans", "zh-hant", "cmn"}


def whisper_code(code: str) -> str:
    """The Whisper language code for a project language code (``zh-tw`` -> ``zh``, ``en-US`` -> ``en``)."""
    code = normalise_language_tag(code)
    if code in _CHINESE_ALIASES or code.startswith("zh-"):
        return "zh"
    if code in ("iw",):
        return "he"
    return code.split("-", 1)[0]


def caller_code(whisper_language: str, allowed: Sequence[str] | None) -> str:
    """Map a Whisper code back to the caller's own code (first allowed code that maps to it)."""
    if allowed:
        for code in allowed:
            if whisper_code(code) == whisper_language:
                return code
    return whisper_language


def prepare_audio(audio: np.ndarray) -> np.ndarray:
    """Validate and normalise pipeline audio: 1-D float32 at 16 kHz, finite, within [-1, 1]."""
    array = np.asarray(audio)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {array.shape}")
    if array.dtype.kind == "i":  # int16 PCM handed in by mistake: scale rather than clip
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("audio contains NaN or infinite samples")
    return np.clip(array, -1.0, 1.0)


@dataclass(frozen=True)
class AsrRequest:
    audio: np.ndarray
    language: str | None  # Whisper code when forced
    allowed: tuple[str, ...] | None  # caller codes
    caller_language: str | None
    prior: str | None = None  # the conversation's language: decoded in unless detection is sure
    progress: RecognitionProgress | None = field(default=None, compare=False)  # filled in as the request runs
    context: Mapping[str, str] | None = field(default=None, compare=False)  # language -> what callers talk about

    def context_text(self, whisper_language: str) -> str | None:
        """The speech context for the language the audio is decoded in (the caller's code first:
        ``zh-tw`` may have its own), or None. A Chinese variant does not fall back to ``zh``'s: a
        prompt in simplified characters would make a Taiwanese caller's transcript simplified."""
        if not self.context:
            return None
        caller = self.caller_language or caller_code(whisper_language, self.allowed)
        if caller in self.context:
            return self.context[caller] or None
        if normalise_language_tag(caller).startswith("zh-"):
            return None
        return self.context.get(whisper_language) or None


class PerLoopBatcher:
    """A :class:`Batcher` for whichever event loop is running: a batcher's queue belongs to one
    loop, and a recogniser (loaded once per process) may outlive a loop (tests, CLI runs)."""

    def __init__(self, runner, *, max_batch: int, max_wait_s: float, name: str) -> None:  # noqa: ANN001
        self._runner, self._max_batch, self._max_wait_s, self._name = runner, max_batch, max_wait_s, name
        self._batcher: Batcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Batcher:
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._loop is not loop:
            self._batcher = Batcher(self._runner, max_batch=self._max_batch, max_wait_s=self._max_wait_s, name=self._name)
            self._loop = loop
        return self._batcher

    @property
    def stats(self):  # noqa: ANN201 - BatcherStats | None
        return self._batcher.stats if self._batcher is not None else None

    def close(self) -> None:
        """Stop the worker from any thread; queued callers of a closed loop are gone with it."""
        batcher, loop, self._batcher, self._loop = self._batcher, self._loop, None, None
        worker = batcher._worker if batcher is not None else None
        if worker is not None and not worker.done() and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(worker.cancel)

    async def aclose(self) -> None:
        batcher, self._batcher, self._loop = self._batcher, None, None
        if batcher is not None:
            await batcher.close()


class BatchedWhisper:
    """Shared public side of the Whisper recognisers."""

    name: str
    languages: frozenset[str]
    multilingual: bool
    _model: Any

    def _start_batching(self, max_batch: int, max_wait_s: float) -> None:
        self._lock = threading.Lock()  # one forward pass at a time: the batch worker, transcribe_many, loops
        self._batcher = PerLoopBatcher(self._run_batch, max_batch=max_batch, max_wait_s=max_wait_s, name=self.name)

    async def transcribe(self, audio: np.ndarray, language: str | None = None, allowed_languages: list[str] | None = None,
                         prior_language: str | None = None, progress: RecognitionProgress | None = None,
                         context: Mapping[str, str] | None = None) -> Transcription:
        """Transcribe one utterance; concurrent calls from many sessions share batches.

        ``prior_language`` (the call's current language) goes with the request; a backend that
        honours it decodes in it unless detection is sure of another language (Whisper's
        detection is shaky on short or synthetic speech, while a caller who really switches is
        detected clearly). The probabilities are reported either way, for spoken-language ID.
        ``progress``, when given, is filled in with the request's queueing, compute and CPU times.
        ``context`` (language -> text: the domain's ``speech_context``) is given to Whisper as the
        text before the audio, its prompt: names and words it makes likely ("Kelvora" rather
        than "Culver"); measured on bench/asr_window.py's sentences it also lowers the word error
        rate of everyday questions."""
        request = self._request(audio, language, allowed_languages)
        if context:
            request = replace(request, context=context)
        if prior_language and not language:
            request = replace(request, prior=prior_language)
        if progress is not None:
            progress.submitted_at = time.monotonic()
            request = replace(request, progress=progress)
        if request.audio.size == 0:
            return Transcription("", request.caller_language, 1.0 if request.caller_language else 0.0,
                                 {request.caller_language: 1.0} if request.caller_language else {}, 0.0, self.name, 0.0)
        return await self._batcher.get().submit(request)

    @property
    def batch_stats(self):  # noqa: ANN201 - BatcherStats | None
        return self._batcher.stats

    def close(self) -> None:
        """Stop the batch worker and release the model."""
        self._batcher.close()
        self._model = None  # type: ignore[assignment]

    async def aclose(self) -> None:
        await self._batcher.aclose()
        self.close()

    # ------------------------------------------------------------------ internals

    def _request(self, audio: np.ndarray, language: str | None, allowed: list[str] | None) -> AsrRequest:
        if self._model is None:
            raise RuntimeError(f"{self.name} is closed")
        array = prepare_audio(audio)
        forced = None
        if language:
            forced = whisper_code(language)
            if forced not in self.languages:
                raise ValueError(f"{self.name} cannot recognise language {language!r}"
                                 + ("" if self.multilingual else " (English-only model)"))
        allowed_tuple = None
        if allowed:
            allowed_tuple = tuple(code for code in allowed if whisper_code(code) in self.languages)
            if not allowed_tuple:
                raise ValueError(f"{self.name} knows none of the allowed languages {list(allowed)}")
        return AsrRequest(array, forced, allowed_tuple, language)

    def _run_batch(self, items: Sequence[BatchItem[AsrRequest]]) -> list[Transcription | BaseException | None]:
        """The batcher's runner (in a worker thread). Items cancelled meanwhile are left out."""
        live = [i for i, item in enumerate(items) if not item.cancelled]
        results: list[Transcription | BaseException | None] = [None] * len(items)
        progresses = [items[i].payload.progress for i in live if items[i].payload.progress is not None]
        started, thread_cpu, process_cpu = time.monotonic(), time.thread_time(), time.process_time()
        for progress in progresses:
            progress.started_at, progress.batch_size = started, len(live)
        try:
            for index, result in zip(live, self._run_requests([items[i].payload for i in live]), strict=True):
                results[index] = result
        finally:
            finished, thread_cpu, process_cpu = time.monotonic(), time.thread_time() - thread_cpu, time.process_time() - process_cpu
            for progress in progresses:
                progress.finished_at, progress.thread_cpu_s, progress.process_cpu_s = finished, thread_cpu, process_cpu
        return results

    def _run_requests(self, requests: Sequence[AsrRequest]) -> list[Transcription | BaseException]:
        if not requests:
            return []
        with self._lock:
            return self._run_locked(requests)

    def _run_locked(self, requests: Sequence[AsrRequest]) -> list[Transcription | BaseException]:
        raise NotImplementedError
