"""Whisper speech recognition on CTranslate2 (faster-whisper), batched across sessions.

Requests from every session go through one shared :class:`voicebot.batching.Batcher`, and a batch
is *really* batched on the model: each utterance's log-Mel features are computed on their own,
padded to Whisper's 30 s window and stacked, then the batch is encoded once
(``WhisperModel.encode``), languages are detected once for the rows that need it
(``model.model.detect_language`` on the encoder output), and text is decoded once
(``model.model.generate`` with one prompt per row: start-of-transcript, that row's language,
transcribe, no-timestamps). This is faster-whisper's own ``BatchedInferencePipeline`` recipe, with
per-request languages. An utterance longer than 30 s (rare after our VAD has segmented the call)
is still detected in the batch, then transcribed on its own with ``WhisperModel.transcribe``
(sequential, its lazy segments consumed).

Defaults are chosen for turn latency: greedy decoding (beam 1), ``vad_filter`` off (the
pipeline's VAD already cut the audio), no timestamps, and a cap on new tokens proportional to the
audio length so that garbage audio cannot make the decoder loop to 448 tokens. Instead of
Whisper's temperature fallback, the rows whose greedy text fails Whisper's own tests (compression
ratio > 2.4, mean log-probability < -1, or the token cap reached) are decoded again together with
beam search (``fallback_beam_size``, 5; ``None`` turns it off) and the better result is kept.
With ``language`` given, detection is skipped.

Language codes: callers speak the project's codes (``zh``, ``zh-tw``, ``en``...); Whisper knows only
``zh`` for Chinese, so ``zh-tw``/``zh-hk``/``zh-hant``/``zh-cn``/``cmn`` are sent to Whisper as
``zh``, and a Whisper ``zh`` comes back as the caller's own Chinese code from ``allowed_languages``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from voicebot.batching import Batcher, BatchItem
from voicebot.pipelines.asr.base import SAMPLE_RATE, Transcription

log = logging.getLogger(__name__)

_WINDOW_S = 30.0
_TOKENS_PER_S = 20  # generous: fast speech is ~4 words/s; Chinese ~6 chars/s at <= 2 tokens each
_MIN_NEW_TOKENS = 16
_NO_SPEECH_THRESHOLD = 0.6  # Whisper's own rule: silent if no-speech is likely *and* the text is unlikely
_LOGPROB_THRESHOLD = -1.0
_COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's default: above it the text is too repetitive to trust
_CHINESE_ALIASES = {"zh", "zh-cn", "zh-tw", "zh-hk", "zh-sg", "zh-hans", "zh-hant", "cmn"}


def whisper_code(code: str) -> str:
    """The Whisper language code for a project language code (``zh-tw`` -> ``zh``, ``en-US`` -> ``en``)."""
    code = code.strip().lower().replace("_", "-")
    if code in _CHINESE_ALIASES or code.startswith("zh-"):
        return "zh"
    if code in ("iw",):
        return "he"
    return code.split("-", 1)[0]


def _caller_code(whisper_language: str, allowed: Sequence[str] | None) -> str:
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


# Detection must be at least this sure to decode in another language than the call's.
PRIOR_OVERRIDE = 0.8

@dataclass(frozen=True)
class _Request:
    audio: np.ndarray
    language: str | None  # Whisper code when forced
    allowed: tuple[str, ...] | None  # caller codes
    caller_language: str | None
    prior: str | None = None  # the conversation's language: decoded in unless detection is sure


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


@dataclass
class _Decoded:
    text: str
    avg_logprob: float
    compression_ratio: float
    silent: bool
    truncated: bool  # stopped by the token cap: a loop, most likely

    @property
    def needs_fallback(self) -> bool:
        if self.silent:
            return False
        return self.truncated or self.compression_ratio > _COMPRESSION_RATIO_THRESHOLD or self.avg_logprob < _LOGPROB_THRESHOLD

    def rank(self) -> tuple[bool, float]:
        """Lower is better: a result that passes the repetition tests first, then the likelier one."""
        return (self.truncated or self.compression_ratio > _COMPRESSION_RATIO_THRESHOLD, -self.avg_logprob)


def _resolve_device(device: str, compute_type: str) -> tuple[str, str]:
    import ctranslate2

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


class FasterWhisperRecognizer:
    """A :class:`~voicebot.pipelines.asr.base.SpeechRecognizer` on faster-whisper, shared by all sessions.

    ``model`` is ``"base"`` (bundled multilingual Whisper base), ``"tiny.en"`` (bundled, English
    only), a local CTranslate2 folder, or a Hugging Face id (see :func:`voicebot.models.resolve_whisper`).
    The model is loaded once, here; ``device="auto"`` picks CUDA (float16) when present, else CPU (int8).
    """

    def __init__(
        self,
        model: str = "base",
        device: str = "auto",
        compute_type: str = "auto",
        beam_size: int = 1,
        fallback_beam_size: int | None = 5,
        max_batch: int = 8,
        max_wait_s: float = 0.01,
        cpu_threads: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        from voicebot.models import resolve_whisper

        self.model_path = resolve_whisper(model, cache_dir)
        self.device, self.compute_type = _resolve_device(device, compute_type)
        self.beam_size = beam_size
        self.fallback_beam_size = fallback_beam_size
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = f"faster-whisper:{model}"
        started = time.perf_counter()
        self._model = WhisperModel(str(self.model_path), device=self.device, compute_type=self.compute_type, cpu_threads=cpu_threads)
        self.load_s = time.perf_counter() - started
        self.multilingual = bool(self._model.model.is_multilingual)
        self.languages: frozenset[str] = frozenset(_LANGUAGE_CODES) if self.multilingual else frozenset({"en"})
        if self.multilingual:
            # The language tokens this checkpoint really has (base: 99, no Cantonese).
            vocab = self._model.hf_tokenizer
            self.languages = frozenset(code for code in self.languages if vocab.token_to_id(f"<|{code}|>") is not None)
        self._tokenizers: dict[str | None, object] = {}
        self._lock = threading.Lock()  # one forward pass at a time: the batch worker, transcribe_many, loops
        self._batcher = PerLoopBatcher(self._run_batch, max_batch=max_batch, max_wait_s=max_wait_s, name=self.name)

    # ------------------------------------------------------------------ public API

    async def transcribe(self, audio: np.ndarray, language: str | None = None, allowed_languages: list[str] | None = None,
                         prior_language: str | None = None) -> Transcription:
        """Transcribe one utterance; concurrent calls from many sessions share batches.

        ``prior_language`` (the call's current language) is decoded in unless detection gives
        another language at least ``PRIOR_OVERRIDE`` probability: Whisper's detection is shaky
        on short or synthetic speech, while a caller who really switches is detected clearly.
        The probabilities are reported either way, for spoken-language ID."""
        request = self._request(audio, language, allowed_languages)
        if prior_language and not language:
            request = replace(request, prior=prior_language)
        if request.audio.size == 0:
            return Transcription("", request.caller_language, 1.0 if request.caller_language else 0.0,
                                 {request.caller_language: 1.0} if request.caller_language else {}, 0.0, self.name, 0.0)
        return await self._batcher.get().submit(request)

    def transcribe_many(self, requests: Sequence[tuple[np.ndarray, str | None, list[str] | None]]) -> list[Transcription]:
        """Synchronous batch entry point (benchmarks, offline jobs): one forward pass for all."""
        prepared = [self._request(audio, language, allowed) for audio, language, allowed in requests]
        results = self._run_requests(prepared)
        out: list[Transcription] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            out.append(result)
        return out

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

    def _request(self, audio: np.ndarray, language: str | None, allowed: list[str] | None) -> _Request:
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
        return _Request(array, forced, allowed_tuple, language)

    def _tokenizer(self, language: str | None):  # noqa: ANN202 - faster_whisper.tokenizer.Tokenizer
        key = language if self.multilingual else None
        if key not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer

            self._tokenizers[key] = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=key or "en")
        return self._tokenizers[key]

    def _run_batch(self, items: Sequence[BatchItem[_Request]]) -> list[Transcription | BaseException | None]:
        """The batcher's runner (in a worker thread). Items cancelled meanwhile are left out."""
        live = [i for i, item in enumerate(items) if not item.cancelled]
        results: list[Transcription | BaseException | None] = [None] * len(items)
        for index, result in zip(live, self._run_requests([items[i].payload for i in live]), strict=True):
            results[index] = result
        return results

    def _features(self, audio: np.ndarray) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        extractor = self._model.feature_extractor
        window = audio[: int(_WINDOW_S * SAMPLE_RATE)]
        features = extractor(window)
        features = features[:, : max(features.shape[-1] - 1, 1)]  # the last frame is padding (as faster-whisper does)
        return pad_or_trim(features, extractor.nb_max_frames)

    def _run_requests(self, requests: Sequence[_Request]) -> list[Transcription | BaseException]:
        if not requests:
            return []
        with self._lock:
            return self._run_locked(requests)

    def _run_locked(self, requests: Sequence[_Request]) -> list[Transcription | BaseException]:
        started = time.perf_counter()
        model = self._model
        features = np.stack([self._features(request.audio) for request in requests])
        encoded = model.encode(features)

        languages: list[str] = []
        probabilities: list[dict[str, float]] = []
        detect_rows = [i for i, request in enumerate(requests) if request.language is None and self.multilingual]
        detected = model.model.detect_language(encoded) if detect_rows else []  # one decoder step for the whole batch
        for request in requests:
            if request.language is not None or not self.multilingual:
                code = request.language or "en"
                languages.append(code)
                probabilities.append({request.caller_language or code: 1.0})
                continue
            languages.append("")
            probabilities.append({})
        for i in detect_rows:
            request = requests[i]
            scores = {token[2:-2]: float(prob) for token, prob in detected[i]}
            if request.allowed:
                restricted: dict[str, float] = {}
                for code in request.allowed:
                    restricted.setdefault(code, scores.get(whisper_code(code), 0.0))
                # Two caller codes for one Whisper language (zh, zh-tw): the first one takes it.
                seen: set[str] = set()
                for code in list(restricted):
                    w = whisper_code(code)
                    if w in seen:
                        restricted[code] = 0.0
                    seen.add(w)
            else:
                restricted = scores
            total = sum(restricted.values())
            if total <= 0:
                restricted = {code: 1.0 / len(restricted) for code in restricted}
            else:
                restricted = {code: p / total for code, p in restricted.items()}
            best = max(restricted, key=restricted.__getitem__)
            if request.prior and restricted.get(request.prior, 0.0) > 0 and best != request.prior and restricted[best] < PRIOR_OVERRIDE:
                best = request.prior
            languages[i] = whisper_code(best)
            ordered = sorted(restricted.items(), key=lambda kv: -kv[1])
            probabilities[i] = dict(ordered if request.allowed else ordered[:5])

        prompts = []
        for code in languages:
            tokenizer = self._tokenizer(code)
            prompts.append([*tokenizer.sot_sequence, tokenizer.no_timestamps])
        durations = [request.audio.size / SAMPLE_RATE for request in requests]
        short = [i for i, duration in enumerate(durations) if duration <= _WINDOW_S]  # longer ones: _transcribe_long
        decoded: dict[int, _Decoded] = {}
        if short:
            decoded = dict(zip(short, self._decode(encoded, features, prompts, languages, durations, short, self.beam_size), strict=True))
        if self.fallback_beam_size and self.fallback_beam_size > self.beam_size:
            # Greedy decoding sometimes loops ("ni ni ni ...") or wanders: Whisper's own tests
            # (compression ratio, mean log-probability) pick those rows out for a beam search.
            retry = [i for i, d in decoded.items() if d.needs_fallback]
            if retry:
                for i, better in zip(retry, self._decode(encoded, features, prompts, languages, durations, retry,
                                                         self.fallback_beam_size), strict=True):
                    decoded[i] = min(decoded[i], better, key=_Decoded.rank)
        batch_ms = (time.perf_counter() - started) * 1000

        results: list[Transcription | BaseException] = []
        for i, request in enumerate(requests):
            code = languages[i]
            caller_language = request.caller_language or _caller_code(code, request.allowed)
            probability = probabilities[i].get(caller_language, 1.0 if request.language else 0.0)
            try:
                text = self._transcribe_long(request.audio, code) if durations[i] > _WINDOW_S else decoded[i].text
            except Exception as exc:  # one bad request must not fail the others
                results.append(exc)
                continue
            results.append(Transcription(
                text=text,
                language=caller_language,
                language_probability=float(probability),
                language_probs={k: round(float(v), 4) for k, v in probabilities[i].items()},
                duration_s=durations[i],
                model=self.name,
                compute_ms=(time.perf_counter() - started) * 1000 if durations[i] > _WINDOW_S else batch_ms,
            ))
        return results

    def _decode(self, encoded, features: np.ndarray, prompts: list[list[int]], languages: list[str], durations: list[float],  # noqa: ANN001
                rows: list[int], beam_size: int) -> list[_Decoded]:
        """Decode ``rows`` of the batch in one ``generate`` call."""
        import ctranslate2
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        model = self._model
        if len(rows) != len(prompts):
            if self.device == "cpu":
                encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))
            else:  # a CUDA StorageView cannot be indexed from here: encode just these rows again
                encoded = model.encode(features[rows])
        longest = min(max(durations[i] for i in rows), _WINDOW_S)
        max_length = min(model.max_length, len(prompts[rows[0]]) + int(_TOKENS_PER_S * longest) + _MIN_NEW_TOKENS)
        generated = model.model.generate(
            encoded,
            [prompts[i] for i in rows],
            beam_size=beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(self._tokenizer(languages[rows[0]]), [-1])),
        )
        out = []
        for i, result in zip(rows, generated, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)  # length_penalty 1, as faster-whisper
            text = self._tokenizer(languages[i]).decode(tokens).strip()
            silent = result.no_speech_prob > _NO_SPEECH_THRESHOLD and avg_logprob < _LOGPROB_THRESHOLD
            out.append(_Decoded("" if silent else text, avg_logprob, get_compression_ratio(text) if text else 0.0, silent,
                                len(tokens) >= max_length - len(prompts[i])))
        return out

    def _transcribe_long(self, audio: np.ndarray, language: str) -> str:
        segments, _info = self._model.transcribe(
            audio,
            language=language if self.multilingual else None,
            beam_size=self.beam_size,
            vad_filter=False,
            without_timestamps=False,  # timestamps let the window seek to a segment end, not cut a word at 30 s
            condition_on_previous_text=False,
            temperature=0.0,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()  # segments are lazy: this runs the model
