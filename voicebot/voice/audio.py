"""Audio plumbing for calls: resampling with PyAV (a library resampler, not a hand-rolled one) and
the outbound track that plays the bot's voice in paced 20 ms frames.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

OUT_RATE = 48_000
FRAME_SAMPLES_OUT = 960  # 20 ms at 48 kHz


_FLOAT_FORMATS = frozenset({"flt", "fltp", "dbl", "dblp"})
MIN_INPUT_RATE, MAX_INPUT_RATE = 4_000, 384_000


class BadAudioFrame(ValueError):
    """A frame no resampler can take (no sample rate, unknown layout): drop it, keep the call."""


class Resampler:
    """Any PyAV frame or int16 mono array -> int16 mono at ``rate``, keeping filter state.

    PyAV's resampler is fixed to the first frame's format, layout and rate and refuses any other
    frame; a peer (or a voice of another rate, for the outbound side) may change them mid-call,
    so the resampler is rebuilt when the input changes. Empty frames give no samples, float
    frames have NaN/inf replaced (swresample turns NaN into a full-scale click)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None

    def frame(self, frame: av.AudioFrame) -> np.ndarray:
        if frame.samples == 0:
            return np.zeros(0, dtype=np.int16)
        if not MIN_INPUT_RATE <= frame.sample_rate <= MAX_INPUT_RATE:  # a 1 Hz "frame" would upsample to minutes of audio
            raise BadAudioFrame(f"audio frame at {frame.sample_rate} Hz (accepted: {MIN_INPUT_RATE}..{MAX_INPUT_RATE})")
        if frame.format.name in _FLOAT_FORMATS:
            frame = _finite(frame)
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or source != self._input:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._input = source
        try:
            out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        except av.error.FFmpegError as exc:
            self._resampler = None  # its state after a failed frame is unknown
            raise BadAudioFrame(f"cannot resample a {source} frame: {exc}") from None
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)

    def array(self, samples: np.ndarray, rate: int) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.astype(np.int16).reshape(1, -1)), format="s16", layout="mono")
        frame.sample_rate = rate
        return self.frame(frame)


def _finite(frame: av.AudioFrame) -> av.AudioFrame:
    samples = frame.to_ndarray()
    if np.isfinite(samples).all() and np.abs(samples).max(initial=0.0) <= 1.0:
        return frame
    clean = av.AudioFrame.from_ndarray(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0).clip(-1.0, 1.0).astype(samples.dtype),
                                       format=frame.format.name, layout=frame.layout.name)
    clean.sample_rate, clean.pts = frame.sample_rate, frame.pts
    if frame.time_base is not None:
        clean.time_base = frame.time_base
    return clean


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


class PacedAudioTrack(MediaStreamTrack):
    """An outbound audio track in 20 ms frames at 48 kHz, paced by the wall clock (no bursts, no
    gaps); subclasses say what each frame holds."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._sent = 0

    def _next_samples(self) -> np.ndarray:
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._sent / OUT_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = self._next_samples()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OUT_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, OUT_RATE)
        self._sent += FRAME_SAMPLES_OUT
        return frame


@dataclass
class _Segment:
    samples: np.ndarray
    label: str
    played: int = 0


class BotAudioTrack(PacedAudioTrack):
    """The bot's voice: queued speech in 20 ms frames, silence when there is none.

    Frames are paced by the wall clock, so the peer hears no gaps while the bot speaks. ``flush``
    (barge-in) drops everything queued at once and reports what was actually heard.
    """

    def __init__(self) -> None:
        super().__init__()
        self._segments: deque[_Segment] = deque()
        self.delivered: list[str] = []  # labels (sentences) fully played since the last reset
        self.on_speaking_changed: list = []  # callbacks(bool)
        self._speaking = False
        self.first_audio_at: float | None = None

    @property
    def speaking(self) -> bool:
        return bool(self._segments)

    def enqueue(self, samples_48k: np.ndarray, label: str) -> None:
        if len(samples_48k):
            self._segments.append(_Segment(samples_48k.astype(np.int16), label))
            self._set_speaking(True)

    def flush(self) -> tuple[list[str], str | None]:
        """Stop speaking now; return the sentences fully heard and the one cut short (if any)."""
        heard = list(self.delivered)
        cut = None
        if self._segments and self._segments[0].played:
            segment = self._segments[0]
            words = segment.label.split()
            cut = " ".join(words[: max(1, round(len(words) * segment.played / len(segment.samples)))]) + " …"
        self._segments.clear()
        self.delivered = []
        self._set_speaking(False)
        return heard, cut

    def _set_speaking(self, value: bool) -> None:
        if value != self._speaking:
            self._speaking = value
            for callback in self.on_speaking_changed:
                callback(value)

    def _next_samples(self) -> np.ndarray:
        out = np.zeros(FRAME_SAMPLES_OUT, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES_OUT and self._segments:
            segment = self._segments[0]
            take = min(FRAME_SAMPLES_OUT - filled, len(segment.samples) - segment.played)
            out[filled:filled + take] = segment.samples[segment.played:segment.played + take]
            segment.played += take
            filled += take
            if segment.played >= len(segment.samples):
                self.delivered.append(segment.label)
                self._segments.popleft()
        if filled and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        if not self._segments:
            self._set_speaking(False)
        return out
