"""WebRTC audio on both sides of a call: PyAV frames in, paced 48 kHz frames out.

aiortc hands the caller's Opus decoded as PyAV frames (48 kHz stereo s16, though a peer may send
other layouts or rates); ``CallerAudio`` turns them into 16 kHz mono PCM for ``VoiceCall.feed_pcm``.
The bot's voice goes out on ``BotAudioTrack``, the ``AudioSink`` of a WebRTC call. Everything
that imports aiortc or PyAV for calls lives here, so the call itself needs neither.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicebot.voice.audio import MAX_INPUT_RATE, MIN_INPUT_RATE, BadAudio, PlayoutQueue

if TYPE_CHECKING:
    from voicebot.voice.call import VoiceCall

log = logging.getLogger(__name__)

OUT_RATE = 48_000
FRAME_SAMPLES_OUT = 960  # 20 ms at 48 kHz
CALL_RATE = 16_000  # what the caller's audio is decoded to: the call's own rate, so it resamples nothing

_FLOAT_FORMATS = frozenset({"flt", "fltp", "dbl", "dblp"})


class BadAudioFrame(BadAudio):
    """A frame no resampler can take (no sample rate, unknown layout): drop it, keep the call."""


class FrameResampler:
    """Any PyAV frame -> int16 mono at ``rate``, keeping swresample's filter state.

    PyAV's resampler is fixed to the first frame's format, layout and rate and refuses any other
    frame; a peer may change them mid-call, so the resampler is rebuilt when the input changes.
    Empty frames give no samples, float frames have NaN/inf replaced (swresample turns NaN into a
    full-scale click)."""

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


class CallerAudio:
    """The caller's decoded frames into a call. A frame that cannot be resampled is dropped and
    counted rather than ending the call (a peer sending garbage gets silence, not a crash)."""

    def __init__(self, call: VoiceCall) -> None:
        self.call = call
        self.resampler = FrameResampler(CALL_RATE)
        self.bad_frames = 0

    def feed(self, frame: av.AudioFrame) -> None:
        started = time.perf_counter()
        try:
            samples = self.resampler.frame(frame)
        except BadAudioFrame as exc:
            self.bad_frames += 1
            if self.bad_frames == 1 or self.bad_frames % 1000 == 0:
                log.warning("call %s: dropped %d unusable audio frame(s): %s", self.call.handle.id, self.bad_frames, exc)
            return
        self.call.inbound_cost.resample_s += time.perf_counter() - started  # 48 kHz stereo -> 16 kHz mono
        if len(samples):
            self.call.feed_pcm(samples, CALL_RATE)


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


class BotAudioTrack(PacedAudioTrack):
    """The bot's voice on a WebRTC call: the ``AudioSink`` at 48 kHz. Queued speech goes out in
    paced 20 ms frames, silence when there is none, so the peer hears no gaps while the bot speaks;
    ``flush`` (barge-in) drops everything queued at once."""

    sample_rate = OUT_RATE

    def __init__(self) -> None:
        super().__init__()
        self.playout = PlayoutQueue(OUT_RATE)
        self.on_speaking_changed: list[Callable[[bool], None]] = self.playout.on_speaking_changed  # the same list
        self.on_playback_started: list[Callable[[], None]] = self.playout.on_playback_started  # when a frame of speech goes out

    @property
    def speaking(self) -> bool:
        return self.playout.speaking

    def enqueue(self, samples: np.ndarray, text: str) -> None:
        self.playout.enqueue(samples, text)

    def flush(self) -> tuple[list[str], str | None]:
        return self.playout.flush()

    def _next_samples(self) -> np.ndarray:
        return self.playout.pull(FRAME_SAMPLES_OUT)
