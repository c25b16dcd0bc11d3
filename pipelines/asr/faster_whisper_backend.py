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

The encoder window: Whisper is trained on 30 s windows, and its encoder costs the same for a 2 s
question as for 30 s of speech. CTranslate2 encodes a shorter window as well (whisper.cpp's
``audio_ctx``), so with ``encoder_window_s`` set (e.g. 10) a batch is encoded over its
longest utterance plus one second of padding, at least ``encoder_window_s``: about 3x less
encoder work for a short question. A window cut this short can make the decoder loop or wander
(whisper.cpp's users report it; measured here on windows cut to the audio's exact length), so
the rows whose text fails Whisper's tests, or whose detected language leaves the call's, are
recognised again on the full 30 s window before any beam search. The default is 15 s: measured
with bench/asr_window.py (variants interleaved, 17 utterances in three languages, a shared machine
at load 5-7) it cut recognition p50 865 -> 282 ms and 1956 -> 571 ms with the word error rate
unchanged in both runs (0.127 and 0.102, each the same as 30 s), and voice_latency.py (10 turns
each, interleaved, load 8-11) voice-to-voice p50 2100 -> 1149 ms. 10 s had cost accuracy in an
earlier run (WER 0.102 -> 0.119, "refund policy" misheard in a voice test); 30 (or None) keeps
Whisper's own window.

Language codes: callers speak the project's codes (``zh``, ``zh-tw``, ``en``...); Whisper knows only
``zh`` for Chinese, so ``zh-tw``/``zh-hk``/``zh-hant``/``zh-cn``/``cmn`` are sent to Whisper as
``zh``, and a Whisper ``zh`` comes back as the caller's own Chinese code from ``allowed_languages``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicebot.pipelines.asr.base import SAMPLE_RATE, Transcription
from voicebot.pipelines.asr.batched import AsrRequest, BatchedWhisper, caller_code, whisper_code

__all__ = ["FasterWhisperRecognizer", "whisper_code"]

log = logging.getLogger(__name__)

_WINDOW_S = 30.0
_FRAMES_PER_S = 100  # log-Mel frames (10 ms hop)
_WINDOW_PADDING_FRAMES = 100  # a short window keeps 1 s of silence after the longest utterance
_TOKENS_PER_S = 20  # generous: fast speech is ~4 words/s; Chinese ~6 chars/s at <= 2 tokens each
_MIN_NEW_TOKENS = 16
_NO_SPEECH_THRESHOLD = 0.6  # Whisper's own rule: silent if no-speech is likely *and* the text is unlikely
_LOGPROB_THRESHOLD = -1.0
_COMPRESSION_RATIO_THRESHOLD = 2.4  # Whisper's default: above it the text is too repetitive to trust


# Detection must be at least this sure to decode in another language than the call's.
PRIOR_OVERRIDE = 0.8

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


class FasterWhisperRecognizer(BatchedWhisper):
    """A :class:`~voicebot.pipelines.asr.base.SpeechRecognizer` on faster-whisper, shared by all sessions.

    ``model`` is ``"base"`` (bundled multilingual Whisper base), ``"tiny.en"`` (bundled, English
    only), a local CTranslate2 folder, or a Hugging Face id (see :func:`voicebot.models.resolve_whisper`).
    The model is loaded once, here; ``device="auto"`` picks CUDA (float16) when present, else CPU (int8).
    """

    class Options(BaseModel):
        """``[asr]`` settings when ``backend = "faster-whisper"``."""

        model_config = ConfigDict(extra="forbid")
        model: str = Field("base", description="'base' (bundled multilingual), 'tiny.en', a folder, or a model id")
        device: str = "auto"
        compute_type: str = "auto"
        beam_size: int = Field(1, ge=1)
        fallback_beam_size: int | None = Field(5, ge=1)
        max_batch: int = Field(8, ge=1)
        max_wait_s: float = Field(0.01, ge=0)
        cpu_threads: int = Field(0, ge=0)
        cache_dir: str | None = None
        encoder_window_s: float | None = Field(15.0, gt=0, le=30, description="shortest encoder window (s) for short "
                                               "utterances; None or 30: always Whisper's 30 s window")

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
        encoder_window_s: float | None = 15.0,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        from voicebot.voice.models import resolve_whisper

        self.model_path = resolve_whisper(model, cache_dir)
        self.device, self.compute_type = _resolve_device(device, compute_type)
        self.beam_size = beam_size
        self.fallback_beam_size = fallback_beam_size
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.encoder_window_s = encoder_window_s if encoder_window_s and encoder_window_s < _WINDOW_S else None
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
        self._start_batching(max_batch, max_wait_s)

    # ------------------------------------------------------------------ public API

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

    def _tokenizer(self, language: str | None):  # noqa: ANN202 - faster_whisper.tokenizer.Tokenizer
        key = language if self.multilingual else None
        if key not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer

            self._tokenizers[key] = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=key or "en")
        return self._tokenizers[key]

    def _features(self, audio: np.ndarray, frames: int | None = None) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        extractor = self._model.feature_extractor
        window = audio[: int(_WINDOW_S * SAMPLE_RATE)]
        features = extractor(window)
        features = features[:, : max(features.shape[-1] - 1, 1)]  # the last frame is padding (as faster-whisper does)
        return pad_or_trim(features, frames or extractor.nb_max_frames)

    def _window_frames(self, requests: Sequence[AsrRequest]) -> int | None:
        """The encoder window for this batch, in frames; None for Whisper's full 30 s."""
        if self.encoder_window_s is None:
            return None
        longest = max(request.audio.size for request in requests) * _FRAMES_PER_S // SAMPLE_RATE
        frames = max(int(self.encoder_window_s * _FRAMES_PER_S), longest + _WINDOW_PADDING_FRAMES)
        return None if frames >= self._model.feature_extractor.nb_max_frames else frames

    def _run_locked(self, requests: Sequence[AsrRequest]) -> list[Transcription | BaseException]:
        frames = self._window_frames(requests)
        if frames is None:
            return self._run_window(requests, None)[0]
        results, failed = self._run_window(requests, frames)
        if failed:  # the short window made these rows loop or wander: the full window decides
            log.debug("%d of %d rows failed on a %d-frame encoder window; recognised again on 30 s", len(failed), len(requests), frames)
            for i, result in zip(failed, self._run_window([requests[i] for i in failed], None)[0], strict=True):
                results[i] = result
        return results

    def _run_window(self, requests: Sequence[AsrRequest], frames: int | None) -> tuple[list[Transcription | BaseException], list[int]]:
        """One batch on an encoder window of ``frames`` (None: 30 s). On a short window the rows
        whose greedy text fails Whisper's tests are returned as failed (for the full window);
        on the full window they get the beam-search fallback."""
        started = time.perf_counter()
        model = self._model
        features = np.stack([self._features(request.audio, frames) for request in requests])
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

        prompts = [self._prompt(code, request.context_text(code)) for code, request in zip(languages, requests, strict=True)]
        durations = [request.audio.size / SAMPLE_RATE for request in requests]
        short = [i for i, duration in enumerate(durations) if duration <= _WINDOW_S]  # longer ones: _transcribe_long
        decoded: dict[int, _Decoded] = {}
        if short:
            decoded = self._decode_by_prompt_length(encoded, features, prompts, languages, durations, short, self.beam_size)
        failed = []
        if frames is not None:
            # Loops or wandering text, and a switch away from the call's language (detection on a
            # short window is the weaker one): the full window decides those rows.
            failed = [i for i, d in decoded.items() if d.needs_fallback
                      or (requests[i].prior and requests[i].language is None and languages[i] != whisper_code(requests[i].prior))]
        if frames is None and self.fallback_beam_size and self.fallback_beam_size > self.beam_size:
            # Greedy decoding sometimes loops ("ni ni ni ...") or wanders: Whisper's own tests
            # (compression ratio, mean log-probability) pick those rows out for a beam search.
            retry = [i for i, d in decoded.items() if d.needs_fallback]
            if retry:
                better = self._decode_by_prompt_length(encoded, features, prompts, languages, durations, retry, self.fallback_beam_size)
                for i in retry:
                    decoded[i] = min(decoded[i], better[i], key=_Decoded.rank)
        batch_ms = (time.perf_counter() - started) * 1000

        results: list[Transcription | BaseException] = []
        for i, request in enumerate(requests):
            if i in failed:
                results.append(RuntimeError("recognised again on the full window"))  # replaced by the caller
                continue
            code = languages[i]
            caller_language = request.caller_language or caller_code(code, request.allowed)
            probability = probabilities[i].get(caller_language, 1.0 if request.language else 0.0)
            try:
                text = self._transcribe_long(request.audio, code, request.context_text(code)) if durations[i] > _WINDOW_S else decoded[i].text
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
        return results, failed

    def _prompt(self, code: str, context: str | None) -> list[int]:
        """The decoder's start: the speech context as previous text (faster-whisper's own cut: the
        last 223 tokens), then the start-of-transcript sequence."""
        tokenizer = self._tokenizer(code)
        start = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if not context:
            return start
        return [tokenizer.sot_prev, *tokenizer.encode(" " + context.strip())[-(self._model.max_length // 2 - 1):], *start]

    def _decode_by_prompt_length(self, encoded, features: np.ndarray, prompts: list[list[int]], languages: list[str],  # noqa: ANN001
                                 durations: list[float], rows: list[int], beam_size: int) -> dict[int, _Decoded]:
        """``_decode`` per group of rows whose prompts are as long: CTranslate2 needs the
        start-of-transcript token at the same place in every row of a call."""
        decoded: dict[int, _Decoded] = {}
        for length in dict.fromkeys(len(prompts[i]) for i in rows):
            group = [i for i in rows if len(prompts[i]) == length]
            decoded.update(zip(group, self._decode(encoded, features, prompts, languages, durations, group, beam_size), strict=True))
        return decoded

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

    def _transcribe_long(self, audio: np.ndarray, language: str, context: str | None = None) -> str:
        segments, _info = self._model.transcribe(
            audio,
            initial_prompt=context,
            language=language if self.multilingual else None,
            beam_size=self.beam_size,
            vad_filter=False,
            without_timestamps=False,  # timestamps let the window seek to a segment end, not cut a word at 30 s
            condition_on_previous_text=False,
            temperature=0.0,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()  # segments are lazy: this runs the model
