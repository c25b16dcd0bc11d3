"""Garbage audio into a voice call: odd sample rates and layouts, float frames full of NaN/inf,
DC offset, full-scale clipping, empty and unusable frames, a format that changes mid-call, and ten
minutes of noise fed faster than real time.

The call is a real ``VoiceCall`` on an in-process ``BotRuntime`` with the real voice services
(bundled Silero VAD, faster-whisper base, Piper/espeak voices): frames go in through the WebRTC
channel's own ``CallerAudio`` (PyAV decoding into ``VoiceCall.feed_pcm``), only without the
network, so hours of audio cost seconds. Nothing may raise, garbage must not become turns, memory
must stay bounded (checked on the endpointer's buffers and the number of recognitions, not on
time), and afterwards the same call still answers a real spoken question. Waits come from this
machine's measured compute (``tests/voice_budget.py``), never from a fixed guess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import pytest_asyncio

from tests.conftest import fresh_data_dir
from tests.voice_budget import ComputeBudget, measure
from voicebot.channels.webrtc.track import OUT_RATE, BotAudioTrack, CallerAudio
from voicebot.config import Settings
from voicebot.core.events import BotMessage, Event, UserTranscript
from voicebot.core.runtime import BotRuntime
from voicebot.pipelines.asr.base import Transcription
from voicebot.pipelines.vad.base import FRAME_SAMPLES, SAMPLE_RATE
from voicebot.voice.audio import resample
from voicebot.voice.call import VoiceCall, VoiceServices
from voicebot.voice.turns import FRAME_MS, Endpointer, TurnEvent

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = "What is your return policy?"


@dataclass
class CountingRecognizer:
    """The real recogniser, counted: how many recognitions garbage audio caused, and how long."""

    inner: Any
    calls: int = 0
    pending: int = 0  # recognitions started and not finished
    longest_s: float = 0.0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    async def transcribe(self, audio: np.ndarray, *args: Any, **kwargs: Any) -> Transcription:
        self.calls += 1
        self.pending += 1
        self.longest_s = max(self.longest_s, len(audio) / SAMPLE_RATE)
        try:
            return await self.inner.transcribe(audio, *args, **kwargs)
        finally:
            self.pending -= 1

    def close(self) -> None:  # the runtime closes the real one
        pass


@dataclass
class Call:
    """A VoiceCall, the WebRTC decoding in front of it, and every status event it emitted."""

    call: VoiceCall
    audio: CallerAudio
    recognizer: CountingRecognizer
    budget: ComputeBudget
    events: list[Event] = field(default_factory=list)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type[Event], count: int = 1) -> list[Any]:
        """Until ``count`` events of ``kind``: as long as the recognitions already queued and one
        more turn take on this machine."""
        timeout = self.budget.turn(turns=1 + self.recognizer.pending)
        deadline = time.monotonic() + timeout
        while len(self.of(kind)) < count:
            assert time.monotonic() < deadline, \
                f"no {kind.__name__} after {timeout:.0f} s ({self.budget}); events: {[type(e).__name__ for e in self.events]}"
            await asyncio.sleep(0.05)
        return self.of(kind)

    async def settled(self) -> None:
        """Until every recognition the audio so far started has finished and its turn is done."""
        timeout = self.budget.turn(turns=1 + self.recognizer.pending)
        deadline = time.monotonic() + timeout
        while self.recognizer.pending or self.call._pending_turns:
            assert time.monotonic() < deadline, f"recognitions still running after {timeout:.0f} s ({self.budget})"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Path:
    return fresh_data_dir(tmp_path_factory.mktemp("garbage-audio"), trained_models)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(data_dir: Path) -> AsyncIterator[BotRuntime]:
    settings = Settings(storage={"data_dir": data_dir}, server={"channels": ["websocket", "webrtc"]})
    runtime = BotRuntime(settings)
    await runtime.start()
    yield runtime
    await runtime.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def budget(runtime: BotRuntime) -> ComputeBudget:
    assert runtime.voice is not None
    return await measure(runtime.voice.recognizer, runtime.voice.voices, QUESTION)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def question_48k(runtime: BotRuntime) -> np.ndarray:
    """The question, spoken by the bundled English voice, at 48 kHz int16 (a caller's microphone)."""
    assert runtime.voice is not None
    voices = runtime.voice.voices
    chunks = [chunk async for chunk in voices.synthesize(QUESTION, "en")]
    return resample(np.concatenate(chunks), voices.sample_rate("en"), OUT_RATE)


async def open_call(runtime: BotRuntime, budget: ComputeBudget, **options: Any) -> Call:
    assert runtime.voice is not None
    services = runtime.voice
    recognizer = CountingRecognizer(services.recognizer)
    turn_options = services.options.model_copy(update=options) if options else services.options
    counted = VoiceServices(services.vad, recognizer, services.voices, turn_options)
    handle = await runtime.open_session("webrtc", language="en")
    events: list[Event] = []
    call = VoiceCall(counted, handle, BotAudioTrack(), events.append)
    return Call(call, CallerAudio(call), recognizer, budget, events)


async def close_call(runtime: BotRuntime, call: Call) -> None:
    await call.call.close()
    assert call.call.handle.id not in runtime.sessions


# -- building frames -------------------------------------------------------------------------------


def to_frames(samples: np.ndarray, rate: int, fmt: str, layout: str, frame_ms: int = 20) -> Iterator[av.AudioFrame]:
    """Float samples in [-1, 1] (mono, at ``rate``) as PyAV frames of ``fmt``/``layout``."""
    channels = 2 if layout == "stereo" else 1
    step = max(1, rate * frame_ms // 1000)
    for start in range(0, len(samples), step):
        chunk = samples[start:start + step].astype(np.float64)
        if fmt.startswith("s16"):
            data = np.clip(np.nan_to_num(chunk) * 32767, -32768, 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = np.clip(np.nan_to_num(chunk) * 2147483647, -2147483648, 2147483647).astype(np.int32)
        elif fmt.startswith("dbl"):
            data = chunk
        else:
            data = chunk.astype(np.float32)
        planar = fmt.endswith("p")
        stacked = np.stack([data] * channels)
        array = stacked if planar else stacked.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(array), format=fmt, layout=layout)
        frame.sample_rate = rate
        yield frame


def at_rate(samples_48k: np.ndarray, rate: int) -> np.ndarray:
    """int16 48 kHz -> float at ``rate``, as a sound card would deliver it."""
    return resample(samples_48k, OUT_RATE, rate).astype(np.float32) / 32768.0


async def feed(call: Call, frames: Iterator[av.AudioFrame] | list[av.AudioFrame]) -> None:
    """Feed frames far faster than real time, letting the loop run now and then (as the WebRTC
    track's ``recv`` would between frames)."""
    for index, frame in enumerate(frames):
        call.audio.feed(frame)
        if index % 25 == 0:
            await asyncio.sleep(0)


def garbage(rate: int, seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = int(rate * seconds)
    t = np.arange(n) / rate
    return {
        "white_noise": rng.normal(0, 0.2, n),
        "dc_offset": np.full(n, 0.4),
        "clipping_square": np.sign(np.sin(2 * np.pi * 150 * t)) * 1.0,
        "overdriven": np.clip(rng.normal(0, 3.0, n), -1, 1),
    }


def assert_bounded(endpointer: Endpointer) -> None:
    options = endpointer.options
    assert len(endpointer._pending) < FRAME_SAMPLES
    assert len(endpointer._history) <= max(1, options.pre_speech_ms // FRAME_MS)
    assert len(endpointer._utterance) * FRAME_MS <= options.max_utterance_s * 1000 + FRAME_MS


async def ask_question(call: Call, question_48k: np.ndarray, rate: int, fmt: str, layout: str) -> dict[str, Any]:
    before = len(call.of(BotMessage))
    speech = np.concatenate([np.zeros(int(rate * 0.3)), at_rate(question_48k, rate), np.zeros(int(rate * 1.2))])
    await feed(call, to_frames(speech, rate, fmt, layout))
    return (await call.wait_for(BotMessage, before + 1))[-1]


# -- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "fmt", "layout"),
    [(8000, "s16", "mono"), (44100, "s16", "stereo"), (96000, "flt", "mono"), (48000, "fltp", "stereo"), (22050, "s32p", "stereo")],
    ids=["8k-s16-mono", "44k1-s16-stereo", "96k-flt-mono", "48k-fltp-stereo", "22k-s32p-stereo"],
)
async def test_garbage_in_any_format_makes_no_turn_and_the_call_still_answers(
        runtime: BotRuntime, budget: ComputeBudget, question_48k: np.ndarray, rate: int, fmt: str, layout: str) -> None:
    call = await open_call(runtime, budget)
    try:
        rng = np.random.default_rng(rate)
        for name, samples in garbage(rate, 2.0, rng).items():
            await feed(call, to_frames(samples, rate, fmt, layout))
            assert_bounded(call.call.endpointer)
            assert not call.of(UserTranscript), (name, call.events)
        if fmt.startswith(("flt", "dbl")):  # float frames carrying NaN and infinities
            poisoned = rng.normal(0, 0.1, rate * 2)
            poisoned[::7], poisoned[3::11], poisoned[5::13] = np.nan, np.inf, -np.inf
            await feed(call, to_frames(poisoned, rate, fmt, layout))
        await feed(call, [av.AudioFrame(format=fmt, layout=layout, samples=0)] * 10)  # empty frames
        await call.settled()
        assert not call.of(UserTranscript) and not call.of(BotMessage), call.events
        answer = await ask_question(call, question_48k, rate, fmt, layout)
        assert answer.trace["knowledge"]["used"] == "return_policy", answer.trace.get("voice")
        assert len(call.of(UserTranscript)) == 1  # one turn: the question, nothing from the garbage
    finally:
        await close_call(runtime, call)


async def test_unusable_and_changing_frames_are_dropped_and_the_call_goes_on(
        runtime: BotRuntime, budget: ComputeBudget, question_48k: np.ndarray) -> None:
    """Frames without a usable rate are dropped and counted; a format change mid-call (PyAV's
    resampler refuses it) is followed, even in the middle of the question."""
    call = await open_call(runtime, budget)
    try:
        bad = []
        for rate in (0, 1, 1000, 10_000_000):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), dtype=np.int16), format="s16", layout="mono")
            frame.sample_rate = rate
            bad.append(frame)
        await feed(call, bad)
        assert call.audio.bad_frames == len(bad)
        speech = np.concatenate([np.zeros(int(48000 * 0.3)), at_rate(question_48k, 48000), np.zeros(int(48000 * 1.2))])
        half = len(speech) // 2
        frames = [*to_frames(speech[:half], 48000, "s16", "stereo"),
                  *to_frames(at_rate((speech[half:] * 32767).astype(np.int16), 16000), 16000, "flt", "mono")]
        await feed(call, frames)
        answer = (await call.wait_for(BotMessage))[-1]
        assert answer.trace["knowledge"]["used"] == "return_policy", answer.trace.get("voice")
    finally:
        await close_call(runtime, call)


async def test_pcm_at_unusable_rates_is_dropped_and_the_call_goes_on(runtime: BotRuntime, budget: ComputeBudget, question_48k: np.ndarray) -> None:
    """A custom transport handing ``feed_pcm`` chunks at rates no resampler takes, or samples that
    are not numbers: they are dropped and counted, the call still answers."""
    call = await open_call(runtime, budget)
    try:
        for rate in (0, 1, 1000, 10_000_000):
            call.call.feed_pcm(np.zeros(960, dtype=np.int16), rate)
        call.call.feed_pcm(np.array(["not", "audio"]), 16_000)
        assert call.call.bad_chunks == 5
        speech = np.concatenate([np.zeros(4800, dtype=np.int16), resample(question_48k, OUT_RATE, 16_000), np.zeros(19200, dtype=np.int16)])
        for start in range(0, len(speech), 320):
            call.call.feed_pcm(speech[start:start + 320], 16_000)
            await asyncio.sleep(0)
        answer = (await call.wait_for(BotMessage))[-1]
        assert answer.trace["knowledge"]["used"] == "return_policy", answer.trace.get("voice")
    finally:
        await close_call(runtime, call)


async def test_nan_in_speech_fed_directly_is_cleaned_before_recognition(runtime: BotRuntime, budget: ComputeBudget, question_48k: np.ndarray) -> None:
    """16 kHz float audio handed straight to the call (a custom transport) with NaN in the speech:
    the endpointer cleans it, so recognition gets finite audio (it refuses NaN) and understands it."""
    call = await open_call(runtime, budget)
    try:
        spoken = at_rate(question_48k, SAMPLE_RATE)
        spoken[::97] = np.nan  # dropouts; infinities would be full-scale clicks, not speech any more
        speech = np.concatenate([np.full(4800, np.nan), spoken, np.zeros(int(SAMPLE_RATE * 1.2))])
        for start in range(0, len(speech), 320):
            call.call.feed_pcm(speech[start:start + 320], SAMPLE_RATE)
            await asyncio.sleep(0)
        answer = (await call.wait_for(BotMessage))[-1]
        assert answer.trace["knowledge"]["used"] == "return_policy", answer.trace.get("voice")
    finally:
        await close_call(runtime, call)


async def test_ten_minutes_of_noise_faster_than_real_time_stay_bounded(
        runtime: BotRuntime, budget: ComputeBudget, question_48k: np.ndarray) -> None:
    """Ten minutes of 48 kHz stereo noise as 100 ms frames, as fast as the VAD takes them: the
    endpointer's buffers stay bounded the whole time and the noise causes no recognition."""
    call = await open_call(runtime, budget)
    try:
        rng = np.random.default_rng(10)
        rate, seconds, frame_s = 48000, 600, 0.1
        for second in range(0, seconds, 10):
            noise = rng.normal(0, 0.15, rate * 10) + (0.2 if second % 60 == 30 else 0.0)  # with a DC step now and then
            await feed(call, to_frames(noise, rate, "s16", "stereo", frame_ms=int(frame_s * 1000)))
            assert_bounded(call.call.endpointer)
        assert call.recognizer.calls <= seconds / call.call.services.options.max_utterance_s + 1
        assert not call.of(BotMessage)
        answer = await ask_question(call, question_48k, 48000, "s16", "stereo")
        assert answer.trace["knowledge"]["used"] == "return_policy"
    finally:
        await close_call(runtime, call)


async def test_endless_speech_is_cut_at_the_longest_utterance(runtime: BotRuntime, question_48k: np.ndarray) -> None:
    """Ten minutes of speech without a pause long enough to end a turn (the question looped): the
    endpointer cuts it at ``max_utterance_s``, so no utterance and no buffer grows past that.
    Measured on the endpointer with the real VAD (recognising 30 twenty-second utterances would
    only measure Whisper)."""
    assert runtime.voice is not None
    endpointer = Endpointer(runtime.voice.vad.stream(), runtime.voice.options)
    clip = at_rate(question_48k, SAMPLE_RATE)
    voiced = np.flatnonzero(np.abs(clip) > 0.02)
    clip = clip[voiced[0]:voiced[-1]]
    loop = np.tile(clip, int(np.ceil(600 * SAMPLE_RATE / len(clip))))[: 600 * SAMPLE_RATE]
    ended: list[int] = []
    for start in range(0, len(loop), SAMPLE_RATE):
        for event, utterance in endpointer.feed(loop[start:start + SAMPLE_RATE]):
            if event is TurnEvent.TURN_ENDED and utterance is not None:
                ended.append(len(utterance))
        assert_bounded(endpointer)
        if start % (30 * SAMPLE_RATE) == 0:
            await asyncio.sleep(0)
    max_samples = runtime.voice.options.max_utterance_s * SAMPLE_RATE
    assert ended and max(ended) <= max_samples + FRAME_SAMPLES
    assert len(ended) >= 600 / runtime.voice.options.max_utterance_s / 2  # speech all along: turns keep being cut
