"""A voice call with no WebRTC at all: the transport contract is PCM in (``VoiceCall.feed_pcm``, any
rate) and an ``AudioSink`` out (any rate), with typed status events.

The call runs on an in-process ``BotRuntime`` with the real voice services (bundled Silero VAD,
faster-whisper base, Piper). A real speech WAV, written at 8 kHz and at 44.1 kHz (a phone carrier
and a sound card), goes into ``feed_pcm``; the bot's reply must come out of an in-memory sink of
this file's own at the sink's rate. Below those, quick checks of the pieces a transport relies on:
streaming resampling, the playout queue's record of what was heard, the WebRTC wire format.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile
from scipy.signal import resample_poly

from tests.conftest import fresh_data_dir
from tests.voice_budget import ComputeBudget, measure
from voicebot.config import Settings
from voicebot.core.events import (
    Backchannel,
    BotMessage,
    BotSpeaking,
    Event,
    FirstAudio,
    Interrupted,
    NoSpeech,
    SpeechStarted,
    UserTranscript,
)
from voicebot.core.runtime import BotRuntime
from voicebot.voice.audio import AudioSink, PlayoutQueue, StreamResampler, resample, to_float32
from voicebot.voice.call import VoiceCall

ORDER_QUESTION = "Where is my order? The number is 5 4 3 2 1."


class MemorySink:
    """An ``AudioSink`` that "plays" into memory at its own rate, in real time as a speaker would:
    it speaks until the audio queued so far would have finished playing."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.on_speaking_changed: list[Callable[[bool], None]] = []
        self.chunks: list[tuple[np.ndarray, str]] = []
        self._ends_at = 0.0
        self._played: list[tuple[float, str]] = []  # (when it finishes playing, sentence)
        self._stopper: asyncio.TimerHandle | None = None

    def enqueue(self, samples: np.ndarray, text: str) -> None:
        if not len(samples):
            return
        loop = asyncio.get_running_loop()
        starting = loop.time() >= self._ends_at
        self._ends_at = max(self._ends_at, loop.time()) + len(samples) / self.sample_rate
        self.chunks.append((samples, text))
        self._played.append((self._ends_at, text))
        if self._stopper is not None:
            self._stopper.cancel()
        self._stopper = loop.call_at(self._ends_at, self._notify, False)
        if starting:
            self._notify(True)

    def flush(self) -> tuple[list[str], str | None]:
        now = asyncio.get_running_loop().time()
        heard = [text for ends, text in self._played if ends <= now]
        playing = [text for ends, text in self._played if ends > now]
        self._played, self._ends_at = [], now
        if self._stopper is not None:
            self._stopper.cancel()
        self._notify(False)
        return list(dict.fromkeys(heard)), (playing[0] + " …") if playing else None

    def _notify(self, speaking: bool) -> None:
        for callback in list(self.on_speaking_changed):
            callback(speaking)

    def audio(self) -> np.ndarray:
        return np.concatenate([samples for samples, _ in self.chunks]) if self.chunks else np.zeros(0, dtype=np.int16)

    def sentences(self) -> list[str]:
        """The sentences spoken, in order (a sentence may come in several chunks)."""
        spoken: list[str] = []
        for _, text in self.chunks:
            if not spoken or spoken[-1] != text:
                spoken.append(text)
        return spoken


def dbfs(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2))) if len(samples) else 0.0
    return 20 * np.log10(max(rms, 1e-6))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Path:
    return fresh_data_dir(tmp_path_factory.mktemp("voice-call"), trained_models)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(data_dir: Path) -> AsyncIterator[BotRuntime]:
    runtime = BotRuntime(Settings(storage={"data_dir": data_dir}, server={"channels": ["websocket", "webrtc"]}))
    await runtime.start()
    yield runtime
    await runtime.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def budget(runtime: BotRuntime) -> ComputeBudget:
    assert runtime.voice is not None
    return await measure(runtime.voice.recognizer, runtime.voice.voices)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def question_wav(runtime: BotRuntime, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The order question spoken by Piper, as a 16-bit WAV at the voice's own rate."""
    assert runtime.voice is not None
    voices = runtime.voice.voices
    speech = np.concatenate([chunk async for chunk in voices.synthesize(ORDER_QUESTION, "en")])
    rate = voices.sample_rate("en")
    path = tmp_path_factory.mktemp("wav") / "order.wav"
    soundfile.write(str(path), speech, rate, subtype="PCM_16")
    return path, rate


def wav_at(path: Path, rate: int, dtype: str, folder: Path) -> np.ndarray:
    """The WAV converted to ``rate`` (scipy's polyphase filter, not the code under test), written
    and read back as a file at that rate, as ``dtype`` samples."""
    speech, source_rate = soundfile.read(str(path), dtype="float32")
    gcd = np.gcd(rate, source_rate)
    converted = resample_poly(speech, rate // gcd, source_rate // gcd).astype(np.float32)
    silence = np.zeros(rate // 2, dtype=np.float32)
    target = folder / f"order-{rate}.wav"
    soundfile.write(str(target), np.concatenate([silence, converted, silence, silence, silence]).clip(-1, 1), rate, subtype="PCM_16")
    samples, read_rate = soundfile.read(str(target), dtype=dtype)
    assert read_rate == rate
    return samples


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("caller_rate", "dtype", "sink_rate"), [(8000, "int16", 8000), (44100, "float32", 16000)],
                         ids=["8k-int16-into-8k-sink", "44k1-float-into-16k-sink"])
async def test_a_call_without_webrtc_hears_pcm_at_any_rate_and_speaks_at_the_sinks_rate(
        runtime: BotRuntime, budget: ComputeBudget, question_wav: tuple[Path, int], tmp_path: Path,
        caller_rate: int, dtype: str, sink_rate: int) -> None:
    assert runtime.voice is not None
    voices = runtime.voice.voices
    caller_audio = wav_at(question_wav[0], caller_rate, dtype, tmp_path)
    sink = MemorySink(sink_rate)
    events: list[Event] = []
    registry = runtime.telemetry.metrics.registry
    heard_before = registry.get_sample_value("voicebot_voice_to_voice_seconds_count") or 0
    rtf_before = registry.get_sample_value("voicebot_asr_real_time_factor_count") or 0
    handle = await runtime.open_session("memory", language="en")
    call = VoiceCall(runtime.voice, handle, sink, events.append)
    try:
        step = caller_rate // 50  # 20 ms chunks, as a carrier or a sound card delivers them
        for start in range(0, len(caller_audio), step):
            call.feed_pcm(caller_audio[start:start + step], caller_rate)
            if start % (step * 10) == 0:
                await asyncio.sleep(0)  # let the loop run, as a transport's reader would between chunks
        audio_s = len(caller_audio) / caller_rate

        def of(kind: type[Event]) -> list[Any]:
            return [event for event in events if isinstance(event, kind)]

        await wait_until(lambda: of(BotMessage), budget.turn(audio_s), f"a reply ({budget}); events {events}")
        transcript = of(UserTranscript)[0]
        assert "54321" in transcript.text.replace(" ", ""), transcript
        assert transcript.language == "en" and transcript.session_id == handle.id
        assert events.index(of(SpeechStarted)[0]) < events.index(transcript) < events.index(of(BotMessage)[0])
        # The whole answer spoken: the bot stopped speaking after it started.
        await wait_until(lambda: [e.on for e in of(BotSpeaking)][-2:] == [True, False], budget.turn(), f"the spoken answer; events {events}")
        assert of(FirstAudio) and of(FirstAudio)[0].turn_id == of(BotMessage)[0].turn_id
        # The metrics (GET /metrics) saw the call: its voice-to-voice latency and recognition speed.
        assert registry.get_sample_value("voicebot_voice_to_voice_seconds_count") == heard_before + len(of(FirstAudio))
        assert registry.get_sample_value("voicebot_asr_real_time_factor_count") == rtf_before + len(of(UserTranscript))
    finally:
        await call.close()

    reply = sink.audio()
    assert reply.dtype == np.int16 and len(reply)
    assert dbfs(reply) > -40 and np.abs(reply).max() > 3000, "the reply is silent"
    # At the sink's rate: as long as the same sentences take at the voice's own rate.
    rate = voices.sample_rate("en")
    spoken_s = 0.0
    for sentence in sink.sentences():
        spoken_s += sum(len(chunk) for chunk in [c async for c in voices.synthesize(sentence, "en")]) / rate
    assert abs(len(reply) / sink_rate - spoken_s) < 0.2 * spoken_s, (len(reply) / sink_rate, spoken_s)


# -- the pieces a transport relies on (no models) ---------------------------------------------------


@pytest.mark.parametrize(("rate", "to_rate"), [(8000, 16000), (44100, 16000), (48000, 16000), (22050, 48000), (22050, 8000), (44101, 16000)])
def test_streaming_resampling_does_not_depend_on_the_chunks(rate: int, to_rate: int) -> None:
    rng = np.random.default_rng(rate)
    signal = rng.normal(0, 0.2, rate).astype(np.float32)
    whole = resample(signal, rate, to_rate)
    stream = StreamResampler(to_rate)
    cuts = np.sort(rng.integers(0, len(signal), 40))
    chunked = np.concatenate([*(stream.push(part, rate) for part in np.split(signal, cuts)), stream.finish()])
    assert abs(len(whole) - len(signal) * to_rate / rate) <= 1
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    # a 1 kHz tone keeps its pitch
    tone = np.sin(2 * np.pi * 1000 * np.arange(rate) / rate).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(resample(tone, rate, to_rate)))
    assert abs(np.argmax(spectrum) * to_rate / (2 * (len(spectrum) - 1)) - 1000) < 5


def test_samples_of_any_format_become_clean_float() -> None:
    assert to_float32(np.array([-32768, 0, 16384], dtype=np.int16)).tolist() == [-1.0, 0.0, 0.5]
    assert to_float32(np.array([np.nan, np.inf, -np.inf, 0.25])).tolist() == [0.0, 1.0, -1.0, 0.25]
    stereo = np.array([[0.5, -0.5], [0.2, 0.4]], dtype=np.float32)
    np.testing.assert_allclose(to_float32(stereo), [0.0, 0.3], atol=1e-7)


def test_playout_queue_reports_what_was_heard() -> None:
    queue = PlayoutQueue(8000)
    changes: list[bool] = []
    queue.on_speaking_changed.append(changes.append)
    queue.enqueue(np.full(800, 1000, dtype=np.int16), "First sentence.")
    queue.enqueue(np.full(800, 1000, dtype=np.int16), "First sentence.")  # a second piece of it
    queue.enqueue(np.full(1000, 1000, dtype=np.int16), "Then the second one is long.")
    assert len(queue.pull(1600)) == 1600 and queue.speaking
    queue.pull(500)
    heard, cut = queue.flush()
    assert heard == ["First sentence."] and cut == "Then the second …"
    assert changes == [True, False] and not queue.pull(160).any()
    assert isinstance(queue, AudioSink)


def test_webrtc_renders_call_events_in_its_wire_format() -> None:
    from voicebot.channels.webrtc.track import BotAudioTrack
    from voicebot.channels.webrtc.wire import render

    ids = {"session_id": "s1", "turn_id": "t1"}
    assert render(SpeechStarted(session_id="s1", turn_id="")) == {"type": "speech_started"}
    assert render(UserTranscript(**ids, text="hi", language="en")) == {"type": "user_transcript", "text": "hi", "language": "en"}
    assert render(BotMessage(**ids, text="Hello.", language="en", trace={"x": 1}, handoff=True)) == {
        "type": "bot_message", "turn_id": "t1", "text": "Hello.", "language": "en", "handoff": True, "trace": {"x": 1}}
    assert render(BotSpeaking(**ids, on=True)) == {"type": "bot_speaking", "on": True}
    assert render(FirstAudio(**ids, after_end_of_turn_ms=800.0, tts_first_chunk_ms=90.0)) == {
        "type": "first_audio", "turn_id": "t1", "after_end_of_turn_ms": 800.0, "tts_first_chunk_ms": 90.0}
    assert render(Interrupted(session_id="s1", turn_id="", delivered="", pipeline_cancelled=False)) == {
        "type": "interrupted", "turn_id": None, "delivered": "", "pipeline_cancelled": False}
    assert render(Backchannel(**ids)) == {"type": "backchannel"}
    assert render(NoSpeech(**ids, duration_s=0.4)) == {"type": "no_speech", "duration_s": 0.4}
    assert isinstance(BotAudioTrack(), AudioSink) and BotAudioTrack.sample_rate == 48_000
