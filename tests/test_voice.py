"""Voice calls end to end: a real aiortc caller on loopback talks to a real server; questions are
spoken by Piper (en) and espeak-ng (de, es); the bot's audio is transcribed with the bundled
Whisper model and checked for the right answer in the right language.

What is asserted is what a caller notices (the answer, its language, the number in it, the bot
going silent when interrupted), not Whisper's exact words, which differ between CPUs. Every wait
is derived from this machine's measured compute (``tests/voice_budget.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess, fresh_data_dir
from tests.voice_budget import ComputeBudget
from voicebot.channels.webrtc.caller import SILENCE_DBFS, Caller, dbfs
from voicebot.channels.webrtc.track import OUT_RATE
from voicebot.voice.audio import resample

VOICE_ENV = {"VOICEBOT_SERVER__CHANNELS": '["websocket", "webrtc"]', "VOICEBOT_CHANNELS__WEBRTC__ICE_LOOPBACK_ONLY": "true"}


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, budget: ComputeBudget) -> Iterator[ServerProcess]:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("voice"), trained_models), extra_env=VOICE_ENV).start(timeout=budget.startup())
    yield server
    server.stop()


async def speak(voices, text: str, language: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Speech at 48 kHz, as a caller's microphone would send it."""
    chunks = [chunk async for chunk in voices.synthesize(text, language)]
    return resample(np.concatenate(chunks), voices.sample_rate(language), OUT_RATE)


def pause(seconds: float) -> np.ndarray:
    return np.zeros(int(OUT_RATE * seconds), dtype=np.int16)


async def connect(voice_server: ServerProcess, budget: ComputeBudget, language: str) -> Caller:
    caller = Caller(voice_server.url, language, loopback_only=True)
    await caller.connect()
    await caller.wait_for("session", timeout=budget.setup())
    return caller


async def until_quiet(caller: Caller, budget: ComputeBudget) -> None:
    """Until the bot has finished speaking its answer. An answer takes its own duration in real
    time, however long, so this fails only when nothing moves for a turn's budget: no new event
    and no new burst of bot audio."""
    progress, moved_at = None, time.monotonic()
    while True:
        speaking = [e["on"] for e in caller.recording.events if e["type"] == "bot_speaking"]
        if speaking and not speaking[-1]:
            return
        now = (len(caller.recording.events), len(caller.bot_audio_started))
        if now != progress:
            progress, moved_at = now, time.monotonic()
        assert time.monotonic() - moved_at < budget.turn(), f"the bot neither spoke nor went quiet ({budget})"
        await asyncio.sleep(0.05)


async def until_settled(voice_server: ServerProcess, budget: ComputeBudget) -> None:
    """Until the server has no live session left."""
    deadline = time.monotonic() + budget.setup()
    while httpx.get(f"{voice_server.url}/health", timeout=10).json()["active_sessions"]:
        assert time.monotonic() < deadline, "sessions still open"
        await asyncio.sleep(0.2)


def heard_number(text: str, digits: str, words: str) -> bool:
    """Whisper writes a spoken number as digits or as words, depending on the CPU's rounding."""
    lowered = text.lower()
    return digits in lowered.replace(",", "") or words in lowered


# espeak-ng's German and Spanish are robotic: Whisper base gets these sentences right (measured),
# many others wrong. Piper's English is close to natural speech.
@pytest.mark.parametrize(
    ("language", "question", "expect", "heard_number_in"),
    [
        ("en", "What is your return policy?", lambda t: t["knowledge"]["used"] == "return_policy", ("30", "thirty")),
        ("de", "Ich habe mein Passwort vergessen.", lambda t: t["state"]["requested_slot"] == "email", None),
        ("es", "Quiero hablar con una persona.", lambda t: t["response"]["path"] == "handoff", None),
    ],
)
async def test_spoken_question_gets_the_right_spoken_answer(voice_server, voices, whisper, budget, language, question, expect, heard_number_in) -> None:  # type: ignore[no-untyped-def]
    caller = await connect(voice_server, budget, language)
    try:
        ended = await caller.say(np.concatenate([pause(0.3), await speak(voices, question, language), pause(0.2)]))
        message = (await caller.wait_for("bot_message", timeout=budget.turn()))[0]
        await until_quiet(caller, budget)
        assert message["language"] == language
        assert expect(message["trace"]), message["trace"]["voice"]
        assert message["trace"]["voice"]["asr"]["model"].startswith("faster-whisper")
        assert caller.latency_after(ended) is not None  # the caller heard the bot
    finally:
        await caller.hang_up()
    audio = caller.recording.audio().astype(np.float32) / 32768.0
    heard = await whisper.transcribe(audio, None, ["en", "zh", "es", "de", "fr"])
    assert heard.language == language, heard  # the caller hears the answer in their language
    assert heard_number_in is None or heard_number(heard.text, *heard_number_in), heard.text  # and the 30 days


async def test_order_number_read_aloud_is_understood(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    caller = await connect(voice_server, budget, "en")
    try:
        await caller.say(await speak(voices, "Where is my order? The number is 5 4 3 2 1.", "en"))
        asked = (await caller.wait_for("bot_message", timeout=budget.turn()))[0]
        assert "54321" in asked["text"] and "Router AX3000" not in asked["text"], asked["trace"]["voice"]
        assert asked["trace"]["identification"]["result"] == "ask"
        await until_quiet(caller, budget)
        # The owner reads out the phone number on the order (national form of +49 151 2345 6789).
        # Whisper base drops repeated zeros ("8 0 0 0" -> "800"), so this is a number without them.
        await caller.say(await speak(voices, "My phone number is 0 1 5 1 2 3 4 5 6 7 8 9.", "en"))
        message = (await caller.wait_for("bot_message", count=2, timeout=budget.turn()))[1]
        assert "54321" in message["text"] and "Router AX3000" in message["text"], message["trace"]["voice"]
    finally:
        await caller.hang_up()


async def test_a_pause_mid_sentence_gets_one_reply(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    caller = await connect(voice_server, budget, "en")
    try:
        audio = np.concatenate([await speak(voices, "Hi,", "en"), pause(0.3), await speak(voices, "what is your refund policy?", "en")])
        await caller.say(audio)
        await caller.wait_for("bot_message", timeout=budget.turn())
        await until_quiet(caller, budget)
        await asyncio.sleep(budget.settle())  # time for a second turn, had the pause ended the first
        assert len(caller.recording.user_transcripts) == 1 and len(caller.recording.bot_messages) == 1
        # Whisper base may hear "reef and policy": the KB matches it by sound (tests/test_kb_ranking.py).
        knowledge = caller.recording.bot_messages[0]["trace"]["knowledge"]
        assert knowledge["used"] == "refund_policy", (caller.recording.user_transcripts, knowledge["ranking"])
    finally:
        await caller.hang_up()


def bot_speaking_on_after(caller: Caller, index: int) -> int | None:
    """The index of the first event after ``index`` saying the bot started speaking."""
    events = caller.recording.events
    return next((i for i in range(index + 1, len(events)) if events[i]["type"] == "bot_speaking" and events[i]["on"]), None)


async def test_barge_in_stops_the_bot_and_backchannels_do_not(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    caller = await connect(voice_server, budget, "en")
    recording = caller.recording
    try:
        await caller.say(await speak(voices, "My internet is not working.", "en"))
        await caller.wait_for("bot_message", timeout=budget.turn())
        await until_quiet(caller, budget)
        quiet_at = len(recording.events) - 1
        # Long troubleshooting steps follow (~25 s of speech). A whole sentence, not the bare word
        # "Wi-Fi": one word is what Whisper most often gets wrong on another CPU or a lossy link.
        await caller.say(await speak(voices, "It is my Wi-Fi at home.", "en"))
        steps = (await caller.wait_for("bot_message", count=2, timeout=budget.turn()))[1]
        assert "router" in steps["text"].lower(), steps["trace"].get("voice")
        deadline = time.monotonic() + budget.turn()
        while (steps_on := bot_speaking_on_after(caller, quiet_at)) is None:
            assert time.monotonic() < deadline, f"the bot did not speak the steps ({budget})"
            await asyncio.sleep(0.05)
        await caller.say(pause(0.5))
        await caller.say(await speak(voices, "ok", "en"))  # a backchannel: too short to interrupt
        with contextlib.suppress(TimeoutError):  # "ok" ends as a backchannel, or the VAD did not even count it as speech
            await caller.wait_for("backchannel", timeout=budget.settle())
        assert not [e for e in recording.events if e["type"] == "interrupted"]
        # The caller has heard the bot for a while (past its first sentence) when they interrupt.
        while len(recording.audio_16k) < recording.frames_at_event[steps_on] + 175:  # 3.5 s of 20 ms frames, in real time
            await asyncio.sleep(0.05)
        speaking = [e["on"] for e in recording.events if e["type"] == "bot_speaking"]
        assert speaking[-1] is True, "the bot stopped speaking the steps before the interruption"
        interruption = await speak(voices, "Wait, stop, I want to talk to a human agent please.", "en")
        await caller.say(interruption)
        interrupted = (await caller.wait_for("interrupted", timeout=budget.turn()))[0]
        cut_at = recording.frames_at_event[recording.events.index(interrupted)]
        await caller.wait_for("bot_message", count=3, timeout=budget.turn())
        handoff = caller.recording.bot_messages[-1]
        assert handoff["handoff"] is True
        answer_on = bot_speaking_on_after(caller, recording.events.index(interrupted))
        deadline = time.monotonic() + budget.turn()
        while answer_on is None:
            assert time.monotonic() < deadline, f"the handoff answer was not spoken ({budget})"
            await asyncio.sleep(0.05)
            answer_on = bot_speaking_on_after(caller, recording.events.index(interrupted))
        # From the cut (allowing up to 1 s of frames already in flight, a busy machine's worth) the
        # bot is silent until it answers the interruption, which it cannot before the caller has
        # finished saying it.
        after_cut = [dbfs(frame) < SILENCE_DBFS for frame in recording.audio_16k[cut_at: recording.frames_at_event[answer_on] - 10]]
        silent_from = next((i for i, silent in enumerate(after_cut) if silent and all(after_cut[i:])), None)
        assert silent_from is not None and silent_from <= 50, f"bot audio went on after the interruption ({after_cut[:80]})"
        assert len(after_cut) - silent_from >= 25, "too little time between the cut and the answer to tell"
        assert interrupted["delivered"]  # what the caller really heard of the steps
        assert "1." in interrupted["delivered"] or "router" in interrupted["delivered"].lower()
    finally:
        await caller.hang_up()
    stored = httpx.get(f"{voice_server.url}/api/conversations/{caller.session['session_id']}", headers=voice_server.admin_headers, timeout=10).json()
    interrupted_turns = [t for t in stored["turns"] if t.get("interrupted")]
    assert interrupted_turns and interrupted_turns[0]["delivered_text"] == interrupted["delivered"]


async def test_language_switch_within_one_call(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    caller = await connect(voice_server, budget, "en")
    try:
        await caller.say(await speak(voices, "What payment methods do you accept?", "en"))
        first = (await caller.wait_for("bot_message", timeout=budget.turn()))[0]
        await until_quiet(caller, budget)
        await caller.say(await speak(voices, "Ich habe mein Passwort vergessen, können Sie mir bitte helfen?", "de"))
        second = (await caller.wait_for("bot_message", count=2, timeout=budget.turn()))[1]
        assert first["language"] == "en" and second["language"] == "de"
        assert second["trace"]["language"]["switched"] is True
    finally:
        await caller.hang_up()


async def test_silence_and_noise_only_calls_get_no_turns_and_end_cleanly(voice_server, budget) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    for audio in (pause(3.0), (rng.normal(0, 300, OUT_RATE * 3)).astype(np.int16)):
        caller = await connect(voice_server, budget, "en")
        try:
            await caller.say(audio)
            await asyncio.sleep(budget.settle())  # a turn made of it would have been recognised by now
            assert caller.recording.bot_messages == [] and caller.recording.user_transcripts == []
        finally:
            await caller.hang_up()
    await until_settled(voice_server, budget)


async def test_peer_vanishing_mid_sentence_frees_the_call(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    caller = await connect(voice_server, budget, "en")
    caller.mic.play(await speak(voices, "Hello, I would like to know where my order is, it was supposed", "en"))
    await asyncio.sleep(1.0)  # mid-sentence: one second of it played, in real time
    await caller.pc.close()  # no hang-up message: the peer is simply gone
    await until_settled(voice_server, budget)


async def test_four_calls_at_once(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    questions = [("en", "What is your refund policy?"), ("de", "Ich habe mein Passwort vergessen."),
                 ("es", "Quiero hablar con una persona."), ("en", "What payment methods do you accept?")]
    audio = [await speak(voices, text, language) for language, text in questions]
    callers = [Caller(voice_server.url, language, loopback_only=True) for language, _ in questions]
    for caller in callers:
        await caller.connect()
    try:
        await asyncio.gather(*(c.wait_for("session", timeout=budget.setup() * len(callers)) for c in callers))
        await asyncio.gather(*(c.say(a) for c, a in zip(callers, audio, strict=True)))
        # Four turns share the CPU: four turns' worth of compute.
        answers = await asyncio.gather(*(c.wait_for("bot_message", timeout=budget.turn(turns=len(callers))) for c in callers))
        assert [a[0]["language"] for a in answers] == [language for language, _ in questions]
    finally:
        for caller in callers:
            await caller.hang_up()


def test_garbage_offers_are_refused_clearly(voice_server) -> None:  # type: ignore[no-untyped-def]
    token = httpx.post(f"{voice_server.url}/api/session-token", json={}, timeout=10).json()["token"]
    for body in ({"sdp": "this is not sdp at all", "type": "offer"}, {"sdp": "v=0", "type": "answer"}, {"nope": 1}):
        response = httpx.post(f"{voice_server.url}/webrtc/offer", json={**body, "access_token": token}, timeout=10)
        assert response.status_code == 400 and response.json()["error"] in {"invalid_offer", "invalid_sdp"}
    assert httpx.get(f"{voice_server.url}/health", timeout=10).json()["status"] == "ok"


def test_quiet_frames_measure_as_silence() -> None:
    assert dbfs(np.zeros(960, dtype=np.int16)) < SILENCE_DBFS < dbfs(np.full(960, 3000, dtype=np.int16))


async def test_command_line_caller_prints_both_sides_and_latency(voice_server, voices, budget, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    import soundfile

    question = tmp_path / "question.wav"
    chunks = [chunk async for chunk in voices.synthesize("What payment methods do you accept?", "en")]
    soundfile.write(str(question), np.concatenate(chunks), voices.sample_rate("en"))
    reply = tmp_path / "reply.wav"
    wait = budget.turn()
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "voicebot", "call", voice_server.url, "--wav", str(question), "--out", str(reply),
                         "--language", "en", "--loopback", "--timeout", str(round(wait))],
        capture_output=True, text=True, timeout=budget.setup() + 3 * wait)  # start-up, then the CLI's own three waits
    assert result.returncode == 0, result.stderr
    assert "you: " in result.stdout and "PayPal" in result.stdout and "voice-to-voice latency:" in result.stdout
    audio, rate = soundfile.read(str(reply))
    assert rate == 16_000 and np.abs(audio).max() > 0.05


def test_spoken_language_id_keeps_short_utterances_and_follows_real_switches() -> None:
    from voicebot.pipelines.lid.spoken import decide_spoken_language

    languages = ["en", "zh", "es", "de", "fr"]
    short = decide_spoken_language({"de": 0.9, "en": 0.1}, {"de": 0.8, "en": 0.2}, "Ja", 0.4, "en", languages)
    assert (short.language, short.switched) == ("en", False) and "too short" in short.reason
    real = decide_spoken_language({"de": 0.92, "en": 0.05}, {"de": 0.9}, "Ich habe mein Passwort vergessen", 2.1, "en", languages)
    assert (real.language, real.switched) == ("de", True)
    unsure = decide_spoken_language({"de": 0.5, "en": 0.45}, {"de": 0.4, "en": 0.6}, "Das ist eine Frage zum Versand", 2.0, "en", languages)
    assert unsure.language == "en" and not unsure.switched
    taiwan = decide_spoken_language({"zh-tw": 0.95}, {"zh": 0.95}, "我想查詢訂單的狀態可以嗎", 2.0, "en", languages)
    assert taiwan.language == "zh" and taiwan.switched
