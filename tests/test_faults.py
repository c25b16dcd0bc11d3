"""Faults: a stage that raises or hangs, a database that is locked or full, a client that vanishes
mid-turn, a server killed mid-turn and started again.

What the customer must get every time: a polite answer in their language that offers a human (a
"yes" then hands off), the session going on, nothing stored lost or overwritten; what the operator
must get: the error in the log under the turn's id (the trace id the client saw in ``ack``).

Stage faults are injected into an in-process ``BotRuntime`` (a real server cannot be made to raise
on cue); storage faults are real SQLite conditions: another process holding an exclusive lock on
the live database file, and ``PRAGMA max_page_count`` lowered on the live connection so the next
write fails with SQLITE_FULL exactly as on a full disk (a tiny filesystem cannot be mounted here).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from tests.conftest import ChatClient, ServerProcess, authorized, fresh_data_dir
from voicebot.config import Settings
from voicebot.core.events import BotMessage, ErrorEvent, Event
from voicebot.core.pipeline import TurnContext
from voicebot.core.runtime import BotRuntime, SessionHandle

FALLBACK_OFFERS = {  # error_internal, per language: it must offer a human
    "en": "agent", "de": "Mitarbeiter", "es": "agente", "fr": "conseiller", "zh": "人工客服",
}
YES = {"en": "yes", "de": "ja", "es": "sí", "fr": "oui", "zh": "是的"}


# -- in-process runtime -----------------------------------------------------------------------------


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> AsyncIterator[BotRuntime]:
    """One runtime for the module: faults are injected per session, so tests cannot disturb each other."""
    settings = Settings(storage={"data_dir": fresh_data_dir(tmp_path_factory.mktemp("faults-runtime"), trained_models)},
                        pipeline={"stage_timeout_s": 1.0, "turn_timeout_s": 8.0})
    runtime = BotRuntime(settings)
    await runtime.start()
    yield runtime
    await runtime.close()


class Conversation:
    """A session handle with its event stream read in the background, turn by turn."""

    def __init__(self, handle: SessionHandle) -> None:
        self.handle = handle
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.handle.events():
            await self.queue.put(event)

    async def say(self, text: str, timeout: float = 30) -> BotMessage | ErrorEvent:
        turn_id = await self.handle.send_text(text)
        while True:
            event = await asyncio.wait_for(self.queue.get(), timeout)
            if isinstance(event, BotMessage | ErrorEvent) and event.turn_id == turn_id:
                return event

    async def close(self) -> None:
        await self.handle.close()
        await asyncio.wait_for(self.reader, 10)


async def open_conversation(runtime: BotRuntime, language: str = "en") -> Conversation:
    return Conversation(await runtime.open_session("websocket", language=language))


def sabotage(handle: SessionHandle, stage_name: str, how: str, times: int = 1) -> list[str]:
    """Make this session's stage raise or hang on its next ``times`` calls; returns the turn ids hit."""
    stage = next(s for s in handle.pipeline.stages if s.name == stage_name)
    original = stage.process
    hit: list[str] = []

    async def process(event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        if len(hit) < times:
            hit.append(turn.turn_id)
            if how == "hang":
                await asyncio.sleep(3600)
            raise RuntimeError(f"injected failure of {stage_name}")
        async for produced in original(event, turn):
            yield produced

    stage.process = process  # type: ignore[method-assign]
    return hit


async def stored_turns(runtime: BotRuntime, conversation_id: str) -> list[dict[str, Any]]:
    found = await runtime.storage.get_conversation(conversation_id)
    assert found is not None
    return list(found["turns"])


# -- stage faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "how"), [("nlu", "raise"), ("nlu", "hang"), ("language", "hang"), ("dialogue", "raise"),
                                             ("generation", "raise"), ("generation", "hang")])
async def test_a_failing_or_hung_stage_gets_the_polite_fallback_and_the_session_goes_on(
        runtime: BotRuntime, stage: str, how: str, caplog: pytest.LogCaptureFixture) -> None:
    chat = await open_conversation(runtime)
    try:
        first = await chat.say("where is my order 12345")
        assert isinstance(first, BotMessage) and "12345" in first.text
        hit = sabotage(chat.handle, stage, how)
        with caplog.at_level(logging.WARNING):
            failed = await chat.say("what is your return policy?")
        assert isinstance(failed, BotMessage), failed
        assert failed.text == runtime.engine.locales.message("error_internal", "en")[0]
        assert FALLBACK_OFFERS["en"] in failed.text and failed.trace["response"]["path"] == "error"
        error = failed.trace["errors"][0]
        assert error["stage"] == stage and ("StageTimeout" if how == "hang" else "RuntimeError") in error["error"]
        # The operator finds it by the turn's id, the id the client got with its 'ack'.
        logged = [r for r in caplog.records if hit[0] in r.getMessage() and r.levelno >= logging.ERROR]
        assert logged and stage in logged[0].getMessage(), [r.getMessage() for r in caplog.records]
        # The session goes on, and the next turn works normally.
        after = await chat.say("what is your return policy?")
        assert isinstance(after, BotMessage) and after.trace["knowledge"]["used"] == "return_policy"
        turns = await stored_turns(runtime, chat.handle.id)
        assert [t["turn_index"] for t in turns] == [1, 2, 3]  # the failed turn did not overwrite turn 1
        assert "12345" in turns[0]["bot_text"] and turns[1]["path"] == "error" and turns[1]["turn_id"] == hit[0]
    finally:
        await chat.close()
    assert chat.handle.id not in runtime.sessions


@pytest.mark.parametrize("language", sorted(FALLBACK_OFFERS))
async def test_after_a_failure_yes_hands_off_in_the_callers_language(runtime: BotRuntime, language: str) -> None:
    chat = await open_conversation(runtime, language)
    try:
        sabotage(chat.handle, "nlu", "raise")
        failed = await chat.say({"en": "I have a question", "de": "Ich habe eine Frage", "es": "Tengo una pregunta",
                                 "fr": "J'ai une question", "zh": "我有一个问题"}[language])
        assert isinstance(failed, BotMessage) and failed.language == language
        assert FALLBACK_OFFERS[language] in failed.text, failed.text
        assert chat.handle.session.state.handoff_offered
        accepted = await chat.say(YES[language])
        assert isinstance(accepted, BotMessage) and accepted.handoff, (accepted.text, accepted.trace.get("intent"))
        assert accepted.trace["response"]["reason"] == "the customer accepted the offer of a human"
        assert accepted.handoff_reason == "accepted_offer" == accepted.trace["response"]["handoff_reason"]
    finally:
        await chat.close()


async def test_without_an_offer_yes_does_not_hand_off(runtime: BotRuntime) -> None:
    """The offer is answered by the very next message only: a later "yes" means nothing special."""
    chat = await open_conversation(runtime)
    try:
        sabotage(chat.handle, "nlu", "raise")
        await chat.say("hello")
        await chat.say("where is my order 12345")
        later = await chat.say("yes")
        assert isinstance(later, BotMessage) and not later.handoff
    finally:
        await chat.close()


async def test_the_handoff_intent_after_a_failure_hands_off(runtime: BotRuntime) -> None:
    chat = await open_conversation(runtime)
    try:
        sabotage(chat.handle, "generation", "raise")
        await chat.say("what is your return policy?")
        handoff = await chat.say("I want to talk to a human agent")
        assert isinstance(handoff, BotMessage) and handoff.handoff
    finally:
        await chat.close()


async def test_a_turn_timeout_also_offers_a_human(tmp_path: Path, trained_models: Path) -> None:
    """With no stage timeout, a hung stage runs into the turn timeout: an error frame with the same
    polite offer, and "yes" next hands off."""
    settings = Settings(storage={"data_dir": fresh_data_dir(tmp_path / "data", trained_models)},
                        pipeline={"stage_timeout_s": None, "turn_timeout_s": 1.0})
    runtime = BotRuntime(settings)
    await runtime.start()
    try:
        chat = await open_conversation(runtime, "de")
        sabotage(chat.handle, "nlu", "hang")
        timed_out = await chat.say("Wo ist meine Bestellung?")
        assert isinstance(timed_out, ErrorEvent) and timed_out.code == "turn_timeout"
        assert FALLBACK_OFFERS["de"] in timed_out.message
        accepted = await chat.say("ja")
        assert isinstance(accepted, BotMessage) and accepted.handoff
        await chat.close()
    finally:
        await runtime.close()


async def test_closing_a_session_with_a_hung_turn_stores_the_fallback_and_frees_it(runtime: BotRuntime) -> None:
    """The client vanishes while its turn hangs in a stage: closing drains the turn (the stage
    timeout answers it), the turn is stored, and no session is left behind."""
    chat = await open_conversation(runtime)
    hit = sabotage(chat.handle, "nlu", "hang")
    await chat.handle.send_text("where is my order 12345")
    await asyncio.sleep(0.1)
    await chat.close()
    assert chat.handle.id not in runtime.sessions and hit
    turns = await stored_turns(runtime, chat.handle.id)
    assert [(t["turn_id"], t["path"]) for t in turns] == [(hit[0], "error")]


# -- storage faults -----------------------------------------------------------------------------------


async def test_a_full_database_fails_the_turn_clearly_and_later_turns_are_stored(runtime: BotRuntime) -> None:
    storage = runtime.storage
    chat = await open_conversation(runtime, "es")
    unlimited = await storage._call(lambda: storage.db.execute("PRAGMA max_page_count").fetchone()[0])
    try:
        assert isinstance(await chat.say("¿Dónde está mi pedido 12345?"), BotMessage)
        pages = await storage._call(lambda: storage.db.execute("PRAGMA page_count").fetchone()[0])
        await storage._call(lambda: storage.db.execute(f"PRAGMA max_page_count = {pages}"))
        try:
            full = await chat.say("¿Cuál es su política de devoluciones? " + "x" * 3000)
        finally:
            await storage._call(lambda: storage.db.execute(f"PRAGMA max_page_count = {unlimited}"))
        assert isinstance(full, ErrorEvent) and full.code == "storage_failed"
        assert full.message == runtime.engine.locales.message("error_storage", "es")[0]
        again = await chat.say("¿Cuál es su política de devoluciones?")
        assert isinstance(again, BotMessage)
        turns = await stored_turns(runtime, chat.handle.id)
        assert len(turns) == 2 and turns[-1]["turn_id"] and "x" * 100 not in turns[-1]["user_text"]
        assert await storage.integrity_ok()
    finally:
        await chat.close()


LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
print("released", flush=True)
"""


class Locker:
    """Another process holding an exclusive lock on the server's database until released."""

    def __init__(self, database: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", LOCKER, str(database)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None and self.process.stdout is not None
            self.process.stdin.write("\n")
            self.process.stdin.flush()
            assert self.process.stdout.readline().strip() == "released"
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Any:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("faults"), trained_models)).start()
    yield server
    server.stop()


async def test_a_locked_database_fails_the_turn_clearly_and_the_server_survives(fault_server: ServerProcess) -> None:
    chat = await ChatClient.open(fault_server.ws_url, language="en")
    await chat.say("where is my order 12345")
    database = fault_server.data_dir / "voicebot.sqlite"
    # A short lock is waited out (SQLite's busy timeout): the customer only notices a delay.
    locker = Locker(database)
    try:
        await chat.send({"type": "message", "text": "what is your return policy?"})
        await asyncio.sleep(1.5)
    finally:
        locker.release()
    waited = await chat.expect("message")
    assert waited["trace"]["knowledge"]["used"] == "return_policy"
    # A lock held past the busy timeout: a clear storage_failed error for that turn only.
    locker = Locker(database)
    try:
        await chat.send({"type": "message", "text": "my internet is not working"})
        error = await chat.expect("error", timeout=40)
        assert error["code"] == "storage_failed" and error["turn_id"] and "saved" in error["message"]
        health = httpx.get(f"{fault_server.url}/health", timeout=10).json()
        assert health["status"] == "ok" and health["active_sessions"] >= 1
    finally:
        locker.release()
    after = await chat.say("what payment methods do you accept?")
    assert "PayPal" in after["text"]
    await chat.close()
    stored = httpx.get(f"{fault_server.url}/api/conversations/{chat.session['session_id']}", headers=fault_server.admin_headers,
                       timeout=10).json()
    texts = [t["user_text"] for t in stored["turns"]]
    assert texts == ["where is my order 12345", "what is your return policy?", "what payment methods do you accept?"]
    assert "database is locked" in fault_server.log_path.read_text(errors="replace")  # type: ignore[union-attr]


# -- clients and servers that vanish ---------------------------------------------------------------


async def test_clients_vanishing_mid_turn_leave_their_turns_stored_and_no_session(fault_server: ServerProcess) -> None:
    sessions = []
    for index in range(5):
        ws = await connect(await authorized(fault_server.ws_url))
        await ws.send(json.dumps({"type": "start", "language": "en"}))
        sessions.append(json.loads(await ws.recv())["session_id"])
        await ws.send(json.dumps({"type": "message", "text": f"where is my order 1234{index}"}))
        await ws.close()  # gone before the answer
    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(f"{fault_server.url}/health", timeout=10).json()
        stored = [httpx.get(f"{fault_server.url}/api/conversations/{sid}", headers=fault_server.admin_headers, timeout=10).json()
                  for sid in sessions]
        if health["active_sessions"] == 0 and all(s["turns"] for s in stored):
            break
        assert time.monotonic() < deadline, (health, [len(s["turns"]) for s in stored])
        await asyncio.sleep(0.2)
    assert [s["turns"][0]["user_text"] for s in stored] == [f"where is my order 1234{i}" for i in range(5)]
    assert all(s["status"] == "ended" for s in stored)


async def test_server_killed_mid_turn_restarts_with_an_intact_database(tmp_path: Path, trained_models: Path) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", trained_models)
    first = ServerProcess(data_dir).start()
    try:
        chat = await ChatClient.open(first.ws_url, language="en")
        await chat.say("where is my order 54321")
        await chat.send({"type": "message", "text": "please cancel it"})
        await chat.expect("ack")
    finally:
        first.stop(signal.SIGKILL)  # mid-turn: the answer may or may not have been committed
    with sqlite3.connect(data_dir / "voicebot.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    second = ServerProcess(data_dir).start()
    try:
        resumed = await ChatClient.open(second.ws_url, token=chat.session["token"])
        assert resumed.session["history"][0]["user"] == "where is my order 54321"
        answer = await resumed.say("what is your return policy?")
        assert answer["trace"]["knowledge"]["used"] == "return_policy"
        await resumed.close()
        stored = httpx.get(f"{second.url}/api/conversations/{chat.session['session_id']}", headers=second.admin_headers, timeout=10).json()
        indices = [t["turn_index"] for t in stored["turns"]]
        assert indices == sorted(set(indices)) and stored["turns"][0]["user_text"] == "where is my order 54321"
        assert stored["turns"][-1]["user_text"] == "what is your return policy?"
    finally:
        second.stop()
