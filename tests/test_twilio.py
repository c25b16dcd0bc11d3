"""Phone calls through a carrier's media stream (Twilio's protocol), end to end.

A simulated carrier (``tests/carrier_sim.py``) signs and posts the incoming-call webhook to a
real ``voicebot serve``, reads its TwiML, opens the media stream with the ``websockets`` client
and streams Piper speech as 20 ms μ-law frames in real time; the bot's μ-law answer is decoded
and transcribed with the bundled Whisper. The carrier's REST API is a real local HTTP server that
records hang-ups and transfers. Waits come from this machine's measured compute
(``tests/voice_budget.py``), never fixed short timeouts; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.carrier_sim import SILENCE_DBFS, FakeCarrierApi, PhoneCaller, dbfs
from tests.conftest import ServerProcess, fresh_data_dir
from tests.speech_checks import closest, word_error_rate
from tests.voice_budget import ComputeBudget
from voicebot.channels.twilio.codec import RATE
from voicebot.voice.audio import resample

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
TRANSFER_NUMBER = "+15550199"


@pytest.fixture(scope="module")
def carrier_api() -> Iterator[FakeCarrierApi]:
    api = FakeCarrierApi()
    yield api
    api.close()


def phone_env(server: ServerProcess, carrier_api: FakeCarrierApi) -> dict[str, str]:
    return {"VOICEBOT_SERVER__CHANNELS": '["websocket", "twilio"]', "VOICEBOT_CHANNELS__TWILIO__AUTH_TOKEN": AUTH_TOKEN,
            "VOICEBOT_CHANNELS__TWILIO__PUBLIC_URL": server.url, "VOICEBOT_CHANNELS__TWILIO__API_BASE_URL": carrier_api.url,
            "VOICEBOT_CHANNELS__TWILIO__TRANSFER_NUMBER": TRANSFER_NUMBER}


@pytest.fixture(scope="module")
def phone_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, budget: ComputeBudget,
                 carrier_api: FakeCarrierApi) -> Iterator[ServerProcess]:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("phone"), trained_models))
    server.extra_env = phone_env(server, carrier_api)
    server.start(timeout=budget.startup())
    yield server
    server.stop()


async def speak(voices, text: str, language: str = "en") -> np.ndarray:  # type: ignore[no-untyped-def]
    """Speech at 8 kHz, as it reaches a phone line (the carrier's μ-law is applied on sending)."""
    chunks = [chunk async for chunk in voices.synthesize(text, language)]
    return resample(np.concatenate(chunks), voices.sample_rate(language), RATE)


def pause(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.int16)


def twilio_conversations(server: ServerProcess) -> dict[str, dict[str, Any]]:
    page = httpx.get(f"{server.url}/api/conversations", params={"limit": 200}, headers=server.admin_headers, timeout=10).json()
    return {item["id"]: item for item in page["items"] if item["channel"] == "twilio"}


def conversation(server: ServerProcess, conversation_id: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}/api/conversations/{conversation_id}", headers=server.admin_headers, timeout=10).json()


async def new_conversation(server: ServerProcess, before: set[str], budget: ComputeBudget) -> str:
    """The id of the one conversation that appeared since ``before`` (this call's)."""
    deadline = time.monotonic() + budget.setup()
    while not (fresh := set(twilio_conversations(server)) - before):
        assert time.monotonic() < deadline, "the call opened no conversation"
        await asyncio.sleep(0.1)
    assert len(fresh) == 1, fresh
    return fresh.pop()


async def until_turns(server: ServerProcess, conversation_id: str, count: int, budget: ComputeBudget, audio_s: float = 0.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + budget.turn(audio_s, turns=count)
    while len(turns := conversation(server, conversation_id)["turns"]) < count:
        assert time.monotonic() < deadline, f"{len(turns)} of {count} turns stored ({budget})"
        await asyncio.sleep(0.2)
    return turns


async def until_bot_quiet(caller: PhoneCaller, budget: ComputeBudget, since_frame: int = 0) -> None:
    """Until the bot has spoken after frame ``since_frame`` and then sent no loud frame for a while
    (an answer takes its own length in real time; this fails only when nothing moves for a turn's budget)."""
    started = time.monotonic()
    while True:
        loud = [i for i, frame in enumerate(caller.received.frames[since_frame:]) if dbfs(frame) > SILENCE_DBFS]
        if loud and time.monotonic() - caller.received.frame_times[since_frame + loud[-1]] > 1.5:
            return
        if caller.closed.is_set():
            return
        assert time.monotonic() - (caller.received.frame_times[-1] if loud else started) < budget.turn(), f"the bot neither spoke nor went quiet ({budget})"
        await asyncio.sleep(0.05)


async def until_settled(server: ServerProcess, budget: ComputeBudget) -> None:
    deadline = time.monotonic() + budget.setup()
    while httpx.get(f"{server.url}/health", timeout=10).json()["active_sessions"]:
        assert time.monotonic() < deadline, "sessions still open"
        await asyncio.sleep(0.2)


async def heard(whisper, caller: PhoneCaller, from_frame: int = 0) -> str:  # type: ignore[no-untyped-def]
    """What Whisper makes of the bot's μ-law answer, decoded and resampled to 16 kHz."""
    audio = np.concatenate(caller.received.frames[from_frame:]) if caller.received.frames[from_frame:] else np.zeros(0, np.int16)
    wide = resample(audio, RATE, 16_000).astype(np.float32) / 32768.0
    return (await whisper.transcribe(wide, "en", ["en"])).text


async def test_an_order_asked_for_by_voice_gets_the_identification_question(phone_server, voices, whisper, budget) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    await caller.connect()
    try:
        session_id = await new_conversation(phone_server, before, budget)
        question = await speak(voices, "Where is my order? The number is 5 4 3 2 1.")
        await caller.say(np.concatenate([pause(0.3), question, pause(0.2)]))
        turn = (await until_turns(phone_server, session_id, 1, budget))[0]
        await until_bot_quiet(caller, budget)
    finally:
        await caller.hang_up()
    assert turn["trace"]["identification"]["result"] == "ask", turn["trace"]
    assert "54321" in turn["bot_text"]
    spoken = await heard(whisper, caller)
    assert word_error_rate(turn["bot_text"], spoken) < 0.5, (turn["bot_text"], spoken)  # the caller heard the question
    marks = caller.received.of("mark")
    returned = [m["name"] for m in caller.received.messages if m["event"] == "mark_returned"]
    assert marks and [m["mark"]["name"] for m in marks] == returned  # each sentence's mark went out after it and came back
    assert all(m["frame"] > 0 for m in marks)


async def test_an_order_number_typed_on_the_keypad_fills_the_slot_asked_for(phone_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    await caller.connect()
    try:
        session_id = await new_conversation(phone_server, before, budget)
        await caller.say(await speak(voices, "Hello, where is my order?"))
        first = (await until_turns(phone_server, session_id, 1, budget))[0]
        assert first["trace"]["state"]["requested_slot"] == "order_id", first["trace"]
        await until_bot_quiet(caller, budget)
        await caller.press("54321#")
        second = (await until_turns(phone_server, session_id, 2, budget))[1]
    finally:
        await caller.hang_up()
    assert second["user_text"] == "54321" and second["trace"]["keypad"] == {"digits": 5}
    assert second["trace"]["identification"]["result"] == "ask" and "54321" in second["bot_text"], second["trace"]


async def test_barge_in_clears_the_carriers_buffer_and_stores_what_was_heard(phone_server, voices, budget, carrier_api) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    received = caller.received
    await caller.connect()
    try:
        session_id = await new_conversation(phone_server, before, budget)
        await caller.say(await speak(voices, "My internet is not working."))
        await until_turns(phone_server, session_id, 1, budget)
        await until_bot_quiet(caller, budget)
        steps_from = len(received.frames)
        # Long troubleshooting steps follow (~25 s of speech); a sentence rather than a bare "Wi-Fi".
        await caller.say(await speak(voices, "It is my Wi-Fi at home."))
        steps = (await until_turns(phone_server, session_id, 2, budget))[1]
        assert "router" in steps["bot_text"].lower(), steps["trace"].get("voice")
        deadline = time.monotonic() + budget.turn()
        while sum(caller.loud_frames_after(steps_from)) < 175:  # the caller has heard 3.5 s of the steps
            assert time.monotonic() < deadline and not caller.closed.is_set(), f"the bot did not speak the steps ({budget})"
            await asyncio.sleep(0.05)
        assert not received.of("clear")
        said_at = await caller.say(await speak(voices, "Wait, stop, I want to talk to a human agent please."))
        assert received.of("clear"), "the bot did not clear the carrier's buffer when the caller talked over it"
        clear = received.of("clear")[0]
        # From the clear (allowing 1 s of frames in flight on a busy machine) until the caller has
        # finished talking the bot sends no speech: it cannot answer what it has not heard out.
        in_flight_until = clear["at"] + 1.0
        assert said_at - in_flight_until > 0.5, "the caller stopped talking too soon after the cut to tell"
        spoken_over = [dbfs(frame) > SILENCE_DBFS for frame, at in zip(received.frames, received.frame_times, strict=True)
                       if in_flight_until < at < said_at]
        assert not any(spoken_over), "the bot kept talking after it cleared the buffer"
        await until_turns(phone_server, session_id, 3, budget)
    finally:
        await caller.hang_up()
    stored = conversation(phone_server, session_id)["turns"]
    interrupted = [t for t in stored if t.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0]["turn_id"] == steps["turn_id"]
    delivered = interrupted[0]["delivered_text"]
    heard_marks = [m for m in received.messages if m["event"] == "mark_returned" and m["played"] and m["at"] < clear["at"]]
    assert delivered and heard_marks  # the bot knows what the caller heard: the sentences whose marks came back, then the cut one
    assert delivered.startswith(steps["bot_text"][:20]) and delivered.endswith("…")
    assert len(delivered) < len(steps["bot_text"])


async def test_goodbye_hangs_up_through_the_carrier_api(phone_server, voices, budget, carrier_api) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    await caller.connect()
    try:
        session_id = await new_conversation(phone_server, before, budget)
        await caller.say(await speak(voices, "That is all, goodbye."))
        turn = (await until_turns(phone_server, session_id, 1, budget))[0]
        assert turn["intent"] == "goodbye", turn
        await asyncio.wait_for(caller.closed.wait(), budget.turn())  # the bot said goodbye, then hung up
    finally:
        await caller.hang_up()
    requests = carrier_api.for_call(caller.call_sid)
    assert [r.form for r in requests] == [{"Status": "completed"}]
    assert requests[0].path == f"/2010-04-01/Accounts/{caller.account_sid}/Calls/{caller.call_sid}.json"
    assert requests[0].auth == "Basic " + base64.b64encode(f"{caller.account_sid}:{AUTH_TOKEN}".encode()).decode()
    assert sum(caller.loud_frames_after(0)) > 10  # the goodbye was heard before the line went dead


async def test_zero_on_the_keypad_hands_off_and_transfers_the_call(phone_server, budget, carrier_api) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    await caller.connect()
    try:
        session_id = await new_conversation(phone_server, before, budget)
        await caller.press("0")
        await asyncio.wait_for(caller.closed.wait(), budget.turn(turns=2))
    finally:
        await caller.hang_up()
    turn = conversation(phone_server, session_id)["turns"][0]
    assert turn["trace"]["response"]["path"] == "handoff"
    # The channel's transfer, not the chat queue: no "leave a message here" on a phone line.
    assert turn["trace"]["handoff"]["route"] == "transferred"
    assert turn["bot_text"] == "I'm putting you through to a colleague now. Please stay on the line."
    requests = carrier_api.for_call(caller.call_sid)
    assert len(requests) == 1 and f"<Dial>{TRANSFER_NUMBER}</Dial>" in requests[0].form["Twiml"]
    assert sum(caller.loud_frames_after(0)) > 10  # the caller heard that a human takes over


async def test_a_webhook_without_a_valid_signature_is_refused(phone_server) -> None:  # type: ignore[no-untyped-def]
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    params = caller.webhook_params()
    forged = PhoneCaller(phone_server.url, "not-the-auth-token-at-all-000000")
    cases = {
        "no signature": await caller.post_webhook(params, signature=""),
        "another token": await caller.post_webhook(params, signature=forged.sign(params)),
        "another URL": await caller.post_webhook(params, signature=caller.sign(params, "https://elsewhere.example/twilio/voice")),
        "tampered From": await caller.post_webhook({**params, "From": "+15550000"}, signature=caller.sign(params)),
    }
    assert {name: r.status_code for name, r in cases.items()} == dict.fromkeys(cases, 403)
    assert all("<Stream" not in r.text for r in cases.values())
    assert (await caller.post_webhook(params)).status_code == 200  # the same request, signed: answered


async def test_a_stream_without_its_calls_token_is_closed(phone_server, budget) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    other = PhoneCaller(phone_server.url, AUTH_TOKEN)
    _, other_token = await other.dial()
    chat_token = httpx.post(f"{phone_server.url}/api/session-token", json={}, timeout=10).json()["token"]
    for token in (None, "garbage", other_token, chat_token):
        caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
        await caller.connect(token=token)
        try:
            await asyncio.wait_for(caller.closed.wait(), budget.setup())
        finally:
            await caller.hang_up()
        assert caller.close_code == 1008, (token, caller.close_code)
        assert not caller.received.frames
    # The stream token is good for its call's stream only, not for a chat session.
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{phone_server.ws_url}?access_token={other_token}") as chat:
            await chat.recv()
    assert set(twilio_conversations(phone_server)) == before  # nothing was opened
    await until_settled(phone_server, budget)


async def test_garbage_and_oversized_frames_harm_no_call(phone_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    await caller.connect()
    try:
        session_id = await new_conversation(phone_server, before, budget)
        for junk in ("not json", '{"event": "nope"}', '{"event": "media", "media": {"payload": "***not base64***"}}',
                     '{"event": "media"}', b"\x00\xff binary", '{"event": "dtmf", "dtmf": {"digit": "55"}}', "[]"):
            await caller.send_raw(junk)
        await caller.say(await speak(voices, "What is your return policy?"))
        turn = (await until_turns(phone_server, session_id, 1, budget))[0]
        assert turn["trace"]["knowledge"]["used"] == "return_policy"  # the call went on as if nothing happened
        big = PhoneCaller(phone_server.url, AUTH_TOKEN)
        await big.connect()
        await big.send_raw('{"event": "media", "media": {"payload": "' + "A" * 200_000 + '"}}')
        await asyncio.wait_for(big.closed.wait(), budget.setup())
        assert big.close_code == 1009
        await big.hang_up()
        assert not caller.closed.is_set()
    finally:
        await caller.hang_up()
    await until_settled(phone_server, budget)


async def test_the_caller_hanging_up_mid_answer_frees_the_call_and_keeps_the_turn(phone_server, voices, budget) -> None:  # type: ignore[no-untyped-def]
    before = set(twilio_conversations(phone_server))
    caller = PhoneCaller(phone_server.url, AUTH_TOKEN)
    await caller.connect()
    session_id = await new_conversation(phone_server, before, budget)
    await caller.say(await speak(voices, "My internet is not working."))
    deadline = time.monotonic() + budget.turn()
    while not caller.received.loud_starts:  # the bot has started answering
        assert time.monotonic() < deadline, f"the bot did not answer ({budget})"
        await asyncio.sleep(0.05)
    await caller.hang_up()
    await until_settled(phone_server, budget)
    stored = conversation(phone_server, session_id)
    assert len(stored["turns"]) == 1 and stored["turns"][0]["bot_text"]


async def test_four_calls_at_once_each_hear_their_own_answer(phone_server, voices, whisper, budget) -> None:  # type: ignore[no-untyped-def]
    questions = ["What is your refund policy?", "What payment methods do you accept?", "I forgot my password.",
                 "Where is my order? The number is 5 4 3 2 1."]
    audio = [await speak(voices, text) for text in questions]
    before = set(twilio_conversations(phone_server))
    callers = [PhoneCaller(phone_server.url, AUTH_TOKEN) for _ in questions]
    try:
        await asyncio.gather(*(c.connect() for c in callers))
        await asyncio.gather(*(c.say(a) for c, a in zip(callers, audio, strict=True)))
        deadline = time.monotonic() + budget.turn(turns=len(callers))
        while len(fresh := set(twilio_conversations(phone_server)) - before) < len(callers) or \
                not all(conversation(phone_server, sid)["turns"] for sid in fresh):
            assert time.monotonic() < deadline, f"not every call was answered ({budget})"
            await asyncio.sleep(0.3)
        await asyncio.gather(*(until_bot_quiet(c, budget) for c in callers))
    finally:
        for caller in callers:
            await caller.hang_up()
    turns = [conversation(phone_server, sid)["turns"][0] for sid in fresh]
    # Each caller's conversation is the one whose transcript is nearest their question; what they
    # heard is nearest that conversation's answer among all four.
    answers = [turns[closest(question, [t["user_text"] for t in turns])]["bot_text"] for question in questions]
    assert len(set(answers)) == len(questions)
    for index, caller in enumerate(callers):
        assert closest(await heard(whisper, caller), answers) == index


def token_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, read without checking it (what anyone holding the TwiML can read)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_caller_id_is_not_trusted_unless_configured(phone_server, tmp_path_factory, trained_models, voices, budget,  # type: ignore[no-untyped-def]
                                                         carrier_api) -> None:
    owner = "+49 151 2345 6789"  # the phone on order 54321
    _, untrusted = await PhoneCaller(phone_server.url, AUTH_TOKEN, caller_id=owner).dial()
    assert "customer" not in token_claims(untrusted)  # by default From proves nothing (it can be forged)
    trusting = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("phone-trusting"), trained_models))
    trusting.extra_env = {**phone_env(trusting, carrier_api), "VOICEBOT_CHANNELS__TWILIO__TRUST_CALLER_ID": "true"}
    trusting.start(timeout=budget.startup())
    try:
        caller = PhoneCaller(trusting.url, AUTH_TOKEN, caller_id=owner)
        await caller.connect()
        try:
            before: set[str] = set()
            session_id = await new_conversation(trusting, before, budget)
            await caller.say(await speak(voices, "Where is my order? The number is 5 4 3 2 1."))
            turn = (await until_turns(trusting, session_id, 1, budget))[0]
        finally:
            await caller.hang_up()
    finally:
        trusting.stop()
    assert token_claims(caller.issued_token)["customer"] == {"phone": owner}
    assert turn["trace"]["identification"]["result"] == "open" and turn["trace"]["identification"]["via"] == "identity"
    assert "Router AX3000" in turn["bot_text"]  # the order's owner, by a trusted caller ID, is not asked to prove it
