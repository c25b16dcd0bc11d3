"""Audio for calls, independent of any transport: the sink contract, sample conversion, resampling.

A call hears PCM at whatever rate its transport delivers (48 kHz from WebRTC, 8 kHz from a phone
carrier, anything from a test) and speaks into an ``AudioSink`` at the sink's own rate. Nothing
here imports aiortc or PyAV: a new transport needs neither. Resampling is scipy's polyphase filter
(``resample_poly``; scipy comes with scikit-learn, a core dependency), run as a stream so chunk
boundaries leave no clicks: chunked output equals resampling the whole signal at once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.signal import firwin, resample_poly

MIN_INPUT_RATE, MAX_INPUT_RATE = 4_000, 384_000
_MAX_FACTOR = 1_000  # polyphase up/down factors beyond this would need filters of 20 000+ taps


class BadAudio(ValueError):
    """Audio no resampler can take (a rate out of range, not numbers): drop it, keep the call."""


@runtime_checkable
class AudioSink(Protocol):
    """Where a call's voice goes: a WebRTC track, a carrier media stream, a test's buffer.

    The call resamples to ``sample_rate`` and hands over int16 mono chunks with the sentence they
    speak; the sink plays them in order. ``flush`` is barge-in: stop at once, drop what is
    queued, and say what the caller really heard (sentences heard whole, and the one cut short,
    if any), so the record of the turn holds what was delivered, not what was generated. The sink
    calls each ``on_speaking_changed`` callback when its playback starts or stops (the call
    listens to know when the caller talks over the bot)."""

    sample_rate: int
    on_speaking_changed: list[Callable[[bool], None]]

    def enqueue(self, samples: np.ndarray, text: str) -> None: ...

    def flush(self) -> tuple[list[str], str | None]: ...


def to_float32(samples: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] from int16/int32/float samples, 1-D or (frames, channels).

    NaN/inf become silence/full scale: recognisers refuse NaN and filters smear it everywhere."""
    array = np.asarray(samples)
    if array.ndim not in (1, 2):
        raise BadAudio(f"audio must be 1-D or (frames, channels), not of shape {array.shape}")
    if array.dtype.kind == "i":
        audio = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    elif array.dtype.kind == "f":
        audio = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    else:
        raise BadAudio(f"audio samples must be integers or floats, not {array.dtype}")
    if audio.ndim == 2:
        audio = audio.mean(axis=1, dtype=np.float32)
    return audio.clip(-1.0, 1.0)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """int16 from float samples in [-1, 1] (clipped); int16 input is returned as is."""
    if samples.dtype == np.int16:
        return samples
    return (to_float32(samples) * 32767.0).round().astype(np.int16)


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """One whole signal (int16 or float, mono) from ``rate`` to ``to_rate``, same dtype family:
    int16 in, int16 out; float in, float32 out."""
    resampler = StreamResampler(to_rate)
    out = np.concatenate([resampler.push(samples, rate), resampler.finish()])
    return to_int16(out) if np.asarray(samples).dtype == np.int16 else out


@dataclass(frozen=True)
class _Ratio:
    up: int
    down: int
    taps: np.ndarray
    reach: int  # input samples the filter needs on either side of an output sample


def _ratio(rate: int, to_rate: int) -> _Ratio:
    """The polyphase factors and filter for ``rate -> to_rate``. Common rates are exact; a rate
    whose exact factors would exceed ``_MAX_FACTOR`` (44 101 Hz -> 16 kHz is 16000/44101) is
    approximated within 0.1 %, far below what a listener or a recogniser notices."""
    exact = Fraction(to_rate, rate)
    ratio = exact if max(exact.numerator, exact.denominator) <= _MAX_FACTOR else \
        exact.limit_denominator(max(1, int(_MAX_FACTOR / max(1.0, float(exact)))))
    up, down = ratio.numerator, ratio.denominator
    half_len = 10 * max(up, down)  # resample_poly's own default filter, designed once per ratio
    taps = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)).astype(np.float32)
    return _Ratio(up, down, taps, math.ceil(half_len / up) + 1)


class StreamResampler:
    """Chunks of one stream -> float32 mono at ``rate``, keeping the filter's context between
    chunks, so the result does not depend on how the stream was cut. Delay: the filter's reach,
    under 2 ms for the usual rates. A change of input rate finishes the old stream first."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._ratio: _Ratio | None = None
        self._input_rate: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._buffer = np.zeros(0, dtype=np.float32)
        self._start = 0  # stream index of _buffer[0]; always a multiple of the down factor
        self._emitted = 0  # output samples handed out so far

    def push(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:  # a 1 Hz "chunk" would upsample to minutes of audio
            raise BadAudio(f"audio at {rate} Hz (accepted: {MIN_INPUT_RATE}..{MAX_INPUT_RATE})")
        audio = to_float32(samples)
        tail = np.zeros(0, dtype=np.float32)
        if rate != self._input_rate:
            tail = self.finish()
            self._input_rate = rate
            self._ratio = None if rate == self.rate else _ratio(rate, self.rate)
        if self._ratio is None:
            return np.concatenate([tail, audio])
        return np.concatenate([tail, self._emit(audio)])

    def _emit(self, audio: np.ndarray) -> np.ndarray:
        ratio = self._ratio
        assert ratio is not None
        self._buffer = np.concatenate([self._buffer, audio])
        end = self._start + len(self._buffer)
        ready = (end - ratio.reach) * ratio.up // ratio.down  # outputs below this have all their input
        if ready <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        out = self._filter()[self._emitted - self._first_output: ready - self._first_output]
        self._emitted = ready
        keep = max(self._start, (ready * ratio.down // ratio.up - ratio.reach) // ratio.down * ratio.down)
        self._buffer = self._buffer[keep - self._start:]
        self._start = keep
        return out

    @property
    def _first_output(self) -> int:
        assert self._ratio is not None
        return self._start * self._ratio.up // self._ratio.down

    def _filter(self) -> np.ndarray:
        assert self._ratio is not None
        return resample_poly(self._buffer, self._ratio.up, self._ratio.down, window=self._ratio.taps).astype(np.float32)

    def finish(self) -> np.ndarray:
        """The rest of the stream (the filter's tail), as if it ended in silence; then start over."""
        out = np.zeros(0, dtype=np.float32)
        if self._ratio is not None and len(self._buffer):
            out = self._filter()[self._emitted - self._first_output:]
        self._reset()
        return out


def leading_silence(samples: np.ndarray, rate: int, threshold_dbfs: float = -50.0, keep_ms: float = 10.0) -> int:
    """How many samples at the start of ``samples`` are silence (10 ms windows below
    ``threshold_dbfs``), less ``keep_ms`` kept before the first sound so its onset stays soft."""
    window = max(1, rate // 100)
    audio = to_float32(np.asarray(samples))
    count = len(audio) // window
    if not count:
        return 0
    rms = np.sqrt(np.mean(audio[: count * window].reshape(count, window).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > 10 ** (threshold_dbfs / 20))
    if not len(loud):
        return 0  # all quiet: nothing to find the start of
    return max(0, int(loud[0]) * window - int(rate * keep_ms / 1000))


def cut_sentence(text: str, played: int, total: int) -> str:
    """The part of a sentence a caller heard before barge-in, by the share of its audio played."""
    words = text.split()
    return " ".join(words[: max(1, round(len(words) * played / max(1, total)))]) + " …"


@dataclass
class _Segment:
    samples: np.ndarray
    text: str
    played: int = 0
    continues: bool = False  # more of the sentence before it, already played (TTS slower than playback)


class PlayoutQueue:
    """Queued speech for sinks that pull fixed frames on their own clock (WebRTC's 20 ms frames,
    a carrier's mu-law packets): ``pull(n)`` gives the next n samples, silence when there is no
    speech. It keeps the ``AudioSink`` bookkeeping: what was heard, what was cut, speaking.

    Consecutive chunks with the same text are one sentence (a TTS may stream a sentence in
    pieces): it counts as heard once, when its last piece has played."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.on_speaking_changed: list[Callable[[bool], None]] = []
        self.on_playback_started: list[Callable[[], None]] = []  # the first samples of a burst of speech were pulled
        self._pulling = False
        self._segments: deque[_Segment] = deque()
        self._delivered: list[str] = []  # sentences fully played since the last flush
        self._last_text: str | None = None
        self._speaking = False

    @property
    def speaking(self) -> bool:
        return bool(self._segments)

    @property
    def delivered(self) -> list[str]:
        """The sentences played whole since the last flush, in order (a sink that confirms
        playback, with a carrier's marks, watches it grow)."""
        return list(self._delivered)

    def enqueue(self, samples: np.ndarray, text: str) -> None:
        if not len(samples):
            return
        audio = to_int16(np.asarray(samples))
        if self._segments and self._segments[-1].text == text:
            last = self._segments[-1]
            last.samples = np.concatenate([last.samples, audio])
        else:
            self._segments.append(_Segment(audio, text, continues=text == self._last_text))
        self._last_text = text
        self._set_speaking(True)

    def flush(self) -> tuple[list[str], str | None]:
        heard, cut = list(self._delivered), None
        if self._segments and self._segments[0].played:
            segment = self._segments[0]
            if segment.continues and heard and heard[-1] == segment.text:
                heard.pop()  # its first piece was heard whole, but not the sentence
            cut = cut_sentence(segment.text, segment.played, len(segment.samples))
        self._segments.clear()
        self._pulling = False
        self._delivered = []
        self._last_text = None
        self._set_speaking(False)
        return heard, cut

    def pull(self, count: int) -> np.ndarray:
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._segments:
            segment = self._segments[0]
            take = min(count - filled, len(segment.samples) - segment.played)
            out[filled:filled + take] = segment.samples[segment.played:segment.played + take]
            segment.played += take
            filled += take
            if segment.played >= len(segment.samples):
                if not (segment.continues and self._delivered and self._delivered[-1] == segment.text):
                    self._delivered.append(segment.text)
                self._segments.popleft()
        if filled and not self._pulling:
            self._pulling = True
            for callback in list(self.on_playback_started):
                callback()
        if not self._segments:
            self._pulling = False
            self._set_speaking(False)
        return out

    def _set_speaking(self, value: bool) -> None:
        if value != self._speaking:
            self._speaking = value
            for callback in list(self.on_speaking_changed):
                callback(value)
