"""Turn-taking a caller notices: one reply to the whole sentence when they pause mid-sentence, a
number read out with pauses not cut short, a complete question answered without the long wait,
and, once the call's language is settled, no language detection.

Real components: an in-process ``BotRuntime`` with the bundled Silero VAD, Whisper base and Piper;
the caller's WAVs are made with Piper with silence inserted between the parts (as the WebRTC
tests do), written to a file and read back, and fed to ``VoiceCall.feed_pcm`` in real time, in
20 ms chunks, as a transport would. Nothing here asserts a time: only what was heard and answered,
and what the trace says was done.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile

from tests.conftest import fresh_data_dir
from tests.speech_checks import digits
from tests.test_voice_call import MemorySink, wait_until
from tests.voice_budget import ComputeBudget, measure
from voicebot.config import Settings
from voicebot.core.events import BotMessage, BotSpeaking, Event, TurnLatency, UserTranscript
from voicebot.core.runtime import BotRuntime
from voicebot.core.sentences import first_clause_split
from voicebot.voice.audio import leading_silence, resample
from voicebot.voice.call import VoiceCall, VoiceServices
from voicebot.voice.endpointing import Completeness, completeness

RATE = 16_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Path:
    return fresh_data_dir(tmp_path_factory.mktemp("voice-turns"), trained_models)


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


async def caller_wav(runtime: BotRuntime, parts: list[str | float], folder: Path) -> np.ndarray:
    """Piper speaking ``parts`` (a float is seconds of silence inserted), as a 16 kHz WAV file read back."""
    assert runtime.voice is not None
    voices = runtime.voice.voices
    audio = [np.zeros(RATE // 2, dtype=np.int16)]
    for part in parts:
        if isinstance(part, float):
            audio.append(np.zeros(int(RATE * part), dtype=np.int16))
        else:
            speech = np.concatenate([chunk async for chunk in voices.synthesize(part, "en")])
            audio.append(resample(speech, voices.sample_rate("en"), RATE))
    path = folder / "caller.wav"
    soundfile.write(str(path), np.concatenate([*audio, np.zeros(RATE * 2, dtype=np.int16)]), RATE, subtype="PCM_16")
    samples, rate = soundfile.read(str(path), dtype="int16")
    assert rate == RATE
    return samples


class Conversation:
    """One call fed in real time, with everything it emitted."""

    def __init__(self, services: VoiceServices, handle: Any) -> None:
        self.events: list[Event] = []
        self.sink = MemorySink(RATE)
        self.call = VoiceCall(services, handle, self.sink, self.events.append)

    def of(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    async def say(self, samples: np.ndarray) -> None:
        step = RATE // 50
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, start in enumerate(range(0, len(samples), step)):
            self.call.feed_pcm(samples[start:start + step], RATE)
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - loop.time()))  # real time, as a microphone

    async def answered(self, count: int, budget: ComputeBudget) -> None:
        """Until ``count`` replies were spoken whole, then long enough that another turn would show."""
        await wait_until(lambda: len(self.of(BotMessage)) >= count, budget.turn(), f"{count} replies ({budget}); {self.events}")
        # An answer takes its own length to play, however long: this fails only when nothing moves.
        loop = asyncio.get_running_loop()
        progress, moved_at = None, loop.time()
        while [e.on for e in self.of(BotSpeaking)][-1:] != [False]:
            now = (len(self.events), len(self.sink.chunks))
            if now != progress:
                progress, moved_at = now, loop.time()
            assert loop.time() - moved_at < 2 * budget.turn(), f"the bot neither spoke nor went quiet ({budget}); {self.events[-6:]}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(budget.settle())


async def open_conversation(runtime: BotRuntime, services: VoiceServices | None = None) -> Conversation:
    assert runtime.voice is not None
    handle = await runtime.open_session("memory", language="en")
    return Conversation(services or runtime.voice, handle)


async def one_turn(runtime: BotRuntime, budget: ComputeBudget, audio: np.ndarray) -> Conversation:
    """A call that says ``audio`` once, waits for the bot's answer and hangs up: its events."""
    conversation = await open_conversation(runtime)
    try:
        await conversation.say(audio)
        await conversation.answered(1, budget)
    finally:
        await conversation.call.close()
    return conversation


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("pause_s", [0.3, 0.5])
async def test_a_pause_mid_sentence_gets_one_reply_to_the_whole_sentence(runtime: BotRuntime, budget: ComputeBudget,
                                                                          tmp_path: Path, pause_s: float) -> None:
    audio = await caller_wav(runtime, ["Hi,", pause_s, "where is my order number 12345?"], tmp_path)
    conversation = await one_turn(runtime, budget, audio)
    transcripts, replies = conversation.of(UserTranscript), conversation.of(BotMessage)
    assert len(transcripts) == 1 and len(replies) == 1, [e.text for e in transcripts]
    assert "12345" in digits(transcripts[0].text), transcripts[0].text
    asr = replies[0].trace["voice"]["asr"]
    # The pause started a speculative recognition; the caller went on, so it was thrown away.
    assert asr["speculative_started"] >= 1, asr
    assert asr["speculative_withdrawn"] + asr["speculative_discarded"] >= 1, asr


@pytest.mark.asyncio(loop_scope="module")
async def test_a_complete_question_then_more_after_a_short_pause_gets_one_reply(runtime: BotRuntime, budget: ComputeBudget,
                                                                                 tmp_path: Path) -> None:
    """A complete question ends its turn sooner, but not inside a 0.3 s pause before the caller's
    next sentence (measured with 416 ms: 3 of 6 such turns answered twice, bench/voice_latency.py --set sentences)."""
    audio = await caller_wav(runtime, ["Can you help me?", 0.3, "My parcel never came."], tmp_path)
    conversation = await one_turn(runtime, budget, audio)
    transcripts = conversation.of(UserTranscript)
    assert len(transcripts) == 1 and len(conversation.of(BotMessage)) == 1, [e.text for e in transcripts]
    assert "parcel" in transcripts[0].text.lower(), transcripts[0].text


@pytest.mark.asyncio(loop_scope="module")
async def test_a_number_read_out_with_pauses_is_not_cut(runtime: BotRuntime, budget: ComputeBudget, tmp_path: Path) -> None:
    """0.6 s pauses between the digit groups measure ~0.85 s of silence: longer than a statement's
    end of turn. The words so far ("my order number is 54") say the caller is not done."""
    audio = await caller_wav(runtime, ["Where is my order? My order number is 5 4,", 0.6, "3 2,", 0.6, "1."], tmp_path)
    conversation = await one_turn(runtime, budget, audio)
    transcripts = conversation.of(UserTranscript)
    assert len(transcripts) == 1 and len(conversation.of(BotMessage)) == 1, [e.text for e in transcripts]
    assert "54321" in digits(transcripts[0].text), transcripts[0].text


@pytest.mark.asyncio(loop_scope="module")
async def test_a_complete_question_ends_on_the_short_silence_and_reports_its_latency(runtime: BotRuntime, budget: ComputeBudget,
                                                                                   tmp_path: Path) -> None:
    audio = await caller_wav(runtime, ["What is your return policy?"], tmp_path)
    conversation = await one_turn(runtime, budget, audio)
    reply = conversation.of(BotMessage)[0]
    assert reply.trace["knowledge"]["used"] == "return_policy"
    assert runtime.voice is not None
    options = runtime.voice.options
    endpointing = reply.trace["voice"]["endpointing"]
    assert endpointing["words"] == "complete" and endpointing["end_of_turn_silence_ms"] == options.complete_turn_silence_ms, endpointing
    assert reply.trace["voice"]["asr"]["speculative"] is True  # the transcript of the pause was the turn's
    assert reply.trace["voice"]["asr"]["speech_context"] is True  # the demo domain's, for English
    latency = conversation.of(TurnLatency)
    assert len(latency) == 1 and latency[0].turn_id == reply.turn_id
    marks = latency[0].marks
    assert marks["sound_seen"] <= marks["speech_seen"] <= marks["end_of_turn"] <= marks["recognised"] <= marks["message"] <= marks["first_audio"]
    assert latency[0].details["asr"]["process_cpu_ms"] > 0 and latency[0].details["leading_silence_trimmed_ms"] >= 0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_statement_speaks_the_first_clause_prepared_during_the_pause(runtime: BotRuntime, budget: ComputeBudget,
                                                                             tmp_path: Path) -> None:
    """The statement's silence is long, here longer than any recognition takes, so its words come
    first; the reply's first clause is then ready when the turn ends, and it is that reply's."""
    assert runtime.voice is not None
    patient = dataclasses.replace(runtime.voice, options=runtime.voice.options.model_copy(update={"end_of_turn_silence_ms": 2500}))
    audio = np.concatenate([await caller_wav(runtime, ["I forgot my password."], tmp_path), np.zeros(RATE * 2, dtype=np.int16)])
    conversation = await open_conversation(runtime, patient)
    try:
        await conversation.say(audio)
        await conversation.answered(1, budget)
    finally:
        await conversation.call.close()
    reply = conversation.of(BotMessage)[0]
    assert reply.trace["voice"]["endpointing"]["words"] == "unknown", reply.trace["voice"]  # a statement: the long silence
    latency = conversation.of(TurnLatency)
    assert len(latency) == 1 and latency[0].details["first_clause_prepared"] is True, latency[0].details
    assert conversation.sink.chunks  # and the caller heard it


@pytest.mark.asyncio(loop_scope="module")
async def test_without_previews_the_reply_is_synthesised_after_the_turn(runtime: BotRuntime, budget: ComputeBudget, tmp_path: Path) -> None:
    assert runtime.voice is not None
    plain = dataclasses.replace(runtime.voice, options=runtime.voice.options.model_copy(update={"preemptive_reply": False}))
    conversation = await open_conversation(runtime, plain)
    try:
        await conversation.say(await caller_wav(runtime, ["I forgot my password."], tmp_path))
        await conversation.answered(1, budget)
    finally:
        await conversation.call.close()
    assert len(conversation.of(BotMessage)) == 1
    assert "first_clause_prepared" not in conversation.of(TurnLatency)[0].details


@pytest.mark.asyncio(loop_scope="module")
async def test_a_settled_language_skips_language_detection(runtime: BotRuntime, budget: ComputeBudget, tmp_path: Path) -> None:
    assert runtime.voice is not None
    settled = dataclasses.replace(runtime.voice, options=runtime.voice.options.model_copy(update={"settled_language_turns": 1}))
    conversation = await open_conversation(runtime, settled)
    try:
        for count, question in enumerate(["What payment methods do you accept?", "How long does shipping take?"], start=1):
            await conversation.say(await caller_wav(runtime, [question], tmp_path))
            await conversation.answered(count, budget)
    finally:
        await conversation.call.close()
    first, second = (reply.trace["voice"]["asr"] for reply in conversation.of(BotMessage))
    assert first["language_detection"] is True, first
    assert second["language_detection"] is False and second["language"] == "en", second
    assert [reply.language for reply in conversation.of(BotMessage)] == ["en", "en"]


@pytest.mark.parametrize(("words", "expected"), [
    ("What is your return policy?", Completeness.COMPLETE),
    ("How far is my order number 12,345?", Completeness.COMPLETE),
    ("My number is 1 2 3", Completeness.INCOMPLETE),
    ("My order number is 54.", Completeness.INCOMPLETE),
    ('My order number is 5\'4. 3\'2".', Completeness.INCOMPLETE),  # digits heard as feet and inches
    ("I ordered it and", Completeness.INCOMPLETE),
    ("Hi,", Completeness.INCOMPLETE),
    ("Hi", Completeness.INCOMPLETE),  # a greeting alone opens a turn
    ("I forgot my password.", Completeness.UNKNOWN),  # a statement may go on
    ("Hi where is my order number 12,345.", Completeness.COMPLETE),  # a question Whisper ended with a full stop
    ("How long does shipping take.", Completeness.COMPLETE),
    ("I ordered a jacket. Can you check my order.", Completeness.COMPLETE),
    ("Can you check where it is?", Completeness.COMPLETE),  # ends on "is", but asked
    ("My order number is.", Completeness.INCOMPLETE),
    ("Wo ist mein Paket.", Completeness.COMPLETE),
    ("¿Dónde está mi pedido.", Completeness.COMPLETE),
    ("Pouvez-vous m'aider.", Completeness.COMPLETE),
    ("When I log in it fails.", Completeness.UNKNOWN),  # a statement that opens like a question
    ("Where I live there is no signal.", Completeness.UNKNOWN),
    ("Cuando llegó estaba roto.", Completeness.UNKNOWN),
    ("Where is my order? The number is 5 4 3.", Completeness.INCOMPLETE),
    ("The number is 54321.", Completeness.UNKNOWN),  # a statement: "the" opens no question
    ("Why?", Completeness.UNKNOWN),  # too few words to be sure
    ("", Completeness.UNKNOWN),
])
def test_which_words_can_end_a_turn(words: str, expected: Completeness) -> None:
    assert completeness(words) is expected



def test_the_first_clause_is_spoken_alone_and_leading_silence_is_found() -> None:
    assert first_clause_split("To protect your data, I first need to check that order 12345 is yours.") == [
        "To protect your data,", "I first need to check that order 12345 is yours."]
    assert first_clause_split("Hi, how are you?") == ["Hi, how are you?"]  # a clause too short to say alone
    assert first_clause_split("Your order has shipped.") == ["Your order has shipped."]
    tone = (np.sin(np.arange(1600) / 5) * 8000).astype(np.int16)
    audio = np.concatenate([np.zeros(800, dtype=np.int16), tone])
    assert 600 <= leading_silence(audio, 16_000) <= 800  # 50 ms of silence found, ~10 ms kept before the sound
    assert leading_silence(tone, 16_000) == 0 and leading_silence(np.zeros(320, dtype=np.int16), 16_000) == 0
