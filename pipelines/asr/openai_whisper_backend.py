"""Whisper speech recognition on PyTorch with the reference ``openai-whisper`` package.

For checkpoints in OpenAI's own ``.pt`` format (``{"dims": ..., "model_state_dict": ...}``), e.g.
a fine-tuned model. The CTranslate2 models bundled with voicebot do not load here; they run on
:mod:`voicebot.pipelines.asr.faster_whisper_backend`, which is faster on CPU.

Install with ``pip install openai-whisper --no-deps tiktoken more-itertools numba tqdm``: its
declared ``triton`` dependency (~1 GB) is unused on CPU. Audio never goes through
``whisper.load_audio`` (which shells out to ffmpeg): the pipeline hands numpy arrays, which are
padded with ``whisper.pad_or_trim`` and turned into log-Mel features with
``whisper.log_mel_spectrogram``.

Batching: requests from all sessions are gathered by the shared batcher; the batch is encoded and
its languages detected in one pass (``whisper.detect_language`` on the stacked features), then
decoded in one ``whisper.decode`` call per language (and speech context) present in the batch (``DecodingOptions``
takes one language). Greedy decoding, no timestamps; fp16 on CUDA, fp32 on CPU. Utterances longer
than 30 s go through ``whisper.transcribe`` on their own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from voicebot.pipelines.asr.base import SAMPLE_RATE, Transcription
from voicebot.pipelines.asr.batched import AsrRequest, BatchedWhisper, caller_code, whisper_code

_WINDOW_S = 30.0
_TOKENS_PER_S = 20
_MIN_NEW_TOKENS = 16
_NO_SPEECH_THRESHOLD = 0.6
_LOGPROB_THRESHOLD = -1.0


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _checkpoint(model: str, download_root: str | None) -> str:
    """A checkpoint path or an official name whose file is cached; never a download when offline."""
    import whisper

    path = Path(model).expanduser()
    if path.is_file():
        return str(path)
    if model in whisper._MODELS:
        root = download_root or os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "whisper")
        cached = Path(root) / os.path.basename(whisper._MODELS[model])
        if not cached.is_file() and _offline():
            from voicebot.voice.models import ModelNotAvailable

            raise ModelNotAvailable(
                f"openai-whisper checkpoint {model!r} is not in {root} and HF_HUB_OFFLINE=1 forbids downloading it; "
                "pass the path of a .pt checkpoint, or use the bundled CTranslate2 models with FasterWhisperRecognizer"
            )
        return model
    from voicebot.voice.models import ModelNotAvailable

    raise ModelNotAvailable(f"openai-whisper model {model!r} is neither a .pt checkpoint file nor one of {whisper.available_models()}")


class OpenAIWhisperRecognizer(BatchedWhisper):
    """A :class:`~voicebot.pipelines.asr.base.SpeechRecognizer` on openai-whisper (PyTorch), shared by all sessions."""

    class Options(BaseModel):
        """``[asr]`` settings when ``backend = "openai-whisper"``."""

        model_config = ConfigDict(extra="forbid")
        model: str = Field("base", description="a model name openai-whisper knows or a .pt checkpoint")
        device: str = "auto"
        beam_size: int = Field(1, ge=1)
        max_batch: int = Field(8, ge=1)
        max_wait_s: float = Field(0.01, ge=0)
        download_root: str | None = None

    def __init__(self, model: str = "base", device: str = "auto", beam_size: int = 1, max_batch: int = 8, max_wait_s: float = 0.01,
                 download_root: str | None = None) -> None:
        import torch
        import whisper

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.fp16 = device.startswith("cuda")
        self.beam_size = beam_size
        self.name = f"openai-whisper:{Path(model).name if Path(model).is_file() else model}"
        started = time.perf_counter()
        self._model = whisper.load_model(_checkpoint(model, download_root), device=device, download_root=download_root)
        self._model.eval()
        self.load_s = time.perf_counter() - started
        self.multilingual = bool(self._model.is_multilingual)
        self._tokenizer = whisper.tokenizer.get_tokenizer(self.multilingual, num_languages=self._model.num_languages, task="transcribe")
        self.languages = frozenset(self._tokenizer.all_language_codes) if self.multilingual else frozenset({"en"})
        self._start_batching(max_batch, max_wait_s)

    def _run_locked(self, requests: Sequence[AsrRequest]) -> list[Transcription | BaseException]:
        """One forward pass for a batch; ``prior_language`` is not used here (detection decides)."""
        import torch
        import whisper

        started = time.perf_counter()
        model = self._model
        dtype = torch.float16 if self.fp16 else torch.float32
        mels = torch.stack([
            whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(r.audio[: int(_WINDOW_S * SAMPLE_RATE)])),
                                        n_mels=model.dims.n_mels)
            for r in requests
        ]).to(self.device, dtype)
        durations = [r.audio.size / SAMPLE_RATE for r in requests]

        with torch.inference_mode():
            features = model.encoder(mels)
            languages: list[str] = []
            probabilities: list[dict[str, float]] = []
            detect_rows = [i for i, r in enumerate(requests) if r.language is None and self.multilingual]
            detected: list[dict[str, float]] = []
            if detect_rows:
                _, detected = whisper.detect_language(model, features[detect_rows], self._tokenizer)
            by_row = dict(zip(detect_rows, detected, strict=True))
            for i, request in enumerate(requests):
                if i not in by_row:
                    code = request.language or "en"
                    languages.append(code)
                    probabilities.append({request.caller_language or code: 1.0})
                    continue
                scores = by_row[i]
                if request.allowed:
                    restricted: dict[str, float] = {}
                    for code in request.allowed:
                        restricted.setdefault(code, 0.0 if any(whisper_code(c) == whisper_code(code) for c in restricted)
                                              else float(scores.get(whisper_code(code), 0.0)))
                else:
                    restricted = {code: float(p) for code, p in scores.items()}
                total = sum(restricted.values())
                restricted = {c: (p / total if total > 0 else 1.0 / len(restricted)) for c, p in restricted.items()}
                ordered = sorted(restricted.items(), key=lambda kv: -kv[1])
                languages.append(whisper_code(ordered[0][0]))
                probabilities.append(dict(ordered if request.allowed else ordered[:5]))

            texts: list[str | BaseException] = [""] * len(requests)
            short = [i for i in range(len(requests)) if durations[i] <= _WINDOW_S]
            contexts = {i: requests[i].context_text(languages[i]) for i in short}
            for code, context in dict.fromkeys((languages[i], contexts[i]) for i in short):
                rows = [i for i in short if languages[i] == code and contexts[i] == context]
                longest = max(durations[i] for i in rows)
                options = whisper.DecodingOptions(
                    task="transcribe", language=code if self.multilingual else None, temperature=0.0, prompt=context,
                    beam_size=self.beam_size if self.beam_size > 1 else None, without_timestamps=True, fp16=self.fp16,
                    sample_len=min(model.dims.n_text_ctx // 2, int(_TOKENS_PER_S * longest) + _MIN_NEW_TOKENS),
                )
                try:
                    decoded = whisper.decode(model, features[rows], options)
                except Exception as exc:  # only this language group fails
                    for i in rows:
                        texts[i] = exc
                    continue
                for i, result in zip(rows, decoded, strict=True):
                    silent = result.no_speech_prob > _NO_SPEECH_THRESHOLD and result.avg_logprob < _LOGPROB_THRESHOLD
                    texts[i] = "" if silent else result.text.strip()
        batch_ms = (time.perf_counter() - started) * 1000

        results: list[Transcription | BaseException] = []
        for i, request in enumerate(requests):
            if durations[i] > _WINDOW_S:
                try:
                    texts[i] = whisper.transcribe(model, request.audio, language=languages[i], temperature=0.0,
                                                  initial_prompt=request.context_text(languages[i]),
                                                  condition_on_previous_text=False, fp16=self.fp16,
                                                  verbose=None)["text"].strip()
                except Exception as exc:
                    texts[i] = exc
            text = texts[i]
            if isinstance(text, BaseException):
                results.append(text)
                continue
            caller_language = request.caller_language or caller_code(languages[i], request.allowed)
            results.append(Transcription(
                text=text,
                language=caller_language,
                language_probability=float(probabilities[i].get(caller_language, 1.0 if request.language else 0.0)),
                language_probs={k: round(v, 4) for k, v in probabilities[i].items()},
                duration_s=durations[i],
                model=self.name,
                compute_ms=(time.perf_counter() - started) * 1000 if durations[i] > _WINDOW_S else batch_ms,
            ))
        return results
