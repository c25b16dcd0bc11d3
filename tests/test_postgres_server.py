"""Real `voicebot serve` processes on a real PostgreSQL: what a customer and an operator notice.

- Privacy end to end: a conversation with an e-mail address, read back from PostgreSQL below the
  backend (psycopg rows, the database's files and WAL): encrypted, redacted where it must be,
  the state still resumes; erasure over the REST API removes the rows.
- PostgreSQL restarted under load (``pg_ctl restart -m fast`` while several chat sessions send
  messages): every answer a client got is stored, every message gets an answer or a clear
  ``storage_failed`` (never a hang), and the sessions go on after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir
from tests.pg_server import PostgresServer, database_of
from voicebot.privacy.audit import subject_ref

EMAIL = "li.wei@example.com"
# The longest a client waits for the answer to one message: a hang fails the test, a slow machine does not.
ANSWER_WITHIN_S = 90


def postgres_env(url: str) -> dict[str, str]:
    return {"VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": url}


def rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(sql.encode(), args).fetchall()


async def test_a_conversation_on_postgres_is_encrypted_redacted_resumable_and_erasable(
        tmp_path: Path, trained_models: Path, postgres_server: PostgresServer, postgres_url: str) -> None:
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env=postgres_env(postgres_url)).start()
    try:
        chat = await ChatClient.open(server.ws_url, language="en", user_id="customer-li")
        await chat.say("Hi, where is my order 12345?")
        answer = await chat.say(f"my email is {EMAIL}")
        assert "12345" in answer["text"] and "Redmi Note 13" in answer["text"]
        session_id, token = chat.session["session_id"], chat.session["token"]
        await chat.close()

        # In PostgreSQL: every stored text encrypted, and no customer detail in its files or WAL.
        stored = rows(postgres_url, "SELECT user_text, bot_text, trace FROM turns WHERE conversation_id = %s ORDER BY turn_index", (session_id,))
        assert len(stored) == 2 and all(value.startswith("enc1:") for row in stored for value in row)
        assert rows(postgres_url, "SELECT state FROM dialogue_state WHERE conversation_id = %s", (session_id,))[0][0].startswith("enc1:")
        disk = postgres_server.raw_bytes(database_of(postgres_url))
        assert not [text for text in (EMAIL, "li.wei", "where is my order", "Redmi Note") if text.encode() in disk]

        # Through the REST API: the transcript redacted, the facts kept; the state keeps the real address.
        async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers, timeout=30) as client:
            detail = (await client.get(f"/api/conversations/{session_id}")).json()
            assert [turn["user_text"] for turn in detail["turns"]] == ["Hi, where is my order 12345?", "my email is <EMAIL>"]
            assert detail["turns"][0]["trace"]["intent"]["name"] == "order_status"
            assert detail["state"]["slots"]["order_id"]["value"] == "12345"

            # A reconnect resumes from PostgreSQL.
            again = await ChatClient.open(server.ws_url, token=token)
            assert again.session["resumed"] is True and again.session["session_id"] == session_id
            await again.close()

            erased = (await client.delete("/api/customers/customer-li")).json()
            assert (erased["conversations"], erased["turns"], erased["profiles"]) == (1, 2, 1) and erased["wiped"] is False
        assert rows(postgres_url, "SELECT COUNT(*) FROM turns") == [(0,)]
        assert rows(postgres_url, "SELECT COUNT(*) FROM dialogue_state") == [(0,)]
        assert rows(postgres_url, "SELECT COUNT(*) FROM user_profiles") == [(0,)]
        audit = rows(postgres_url, "SELECT action, detail FROM audit_log WHERE action = 'erase_customer'")
        assert len(audit) == 1 and audit[0][1]["subject"] == subject_ref("customer-li") and "customer-li" not in json.dumps(audit[0][1])
    finally:
        server.stop()


@pytest.fixture
def restartable_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, restarted under load without touching the session's server."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


class LoadClient:
    """One chat session sending messages one after another, keeping what it was told."""

    def __init__(self, chat: ChatClient) -> None:
        self.chat = chat
        self.answered: list[str] = []  # turn ids the client got a bot message for
        self.refused: list[str] = []   # turn ids refused with storage_failed
        self.answered_after_restart = 0
        self.waiting = False  # a message sent, its answer not yet here

    async def send(self, text: str, restarted: bool) -> None:
        self.waiting = True
        await self.chat.send({"type": "message", "text": text})
        while True:
            message = await self.chat.recv(timeout=ANSWER_WITHIN_S)
            if message["type"] == "message":
                self.answered.append(message["turn_id"])
                self.answered_after_restart += restarted
                break
            if message["type"] == "error":
                assert message["code"] == "storage_failed", message  # the only error a storage outage may cause
                assert message["turn_id"] and message["message"]
                self.refused.append(message["turn_id"])
                break
        self.waiting = False


async def test_postgres_restarted_under_load_loses_no_answered_turn_and_hangs_no_client(
        tmp_path: Path, trained_models: Path, restartable_postgres: PostgresServer) -> None:
    url = restartable_postgres.create_database("voicebot")
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env=postgres_env(url)).start()
    sessions, after_restart = 6, 4
    restarted = asyncio.Event()
    messages = ["where is my order 12345?", "what payment methods do you accept?", "my internet is not working", "thanks"]
    try:
        clients = [LoadClient(await ChatClient.open(server.ws_url, language="en")) for _ in range(sessions)]

        async def talk(client: LoadClient) -> None:
            sent = 0
            while not restarted.is_set() or client.answered_after_restart < after_restart:
                await client.send(messages[sent % len(messages)], restarted.is_set())
                sent += 1
                assert sent < 200, "the sessions never recovered from the restart"
                await asyncio.sleep(0.4)  # below the per-session message rate

        in_flight_at_restart = 0

        async def restart_with_turns_in_flight() -> None:
            nonlocal in_flight_at_restart
            while min(len(client.answered) for client in clients) < 3:
                await asyncio.sleep(0.05)
            # A slow commit, for real: a transaction holding the turns table makes the server's saves wait inside
            # theirs, so the restart cuts them mid-statement (below the 5 s statement timeout).
            blocker = await psycopg.AsyncConnection.connect(url)
            await blocker.execute("LOCK TABLE turns IN EXCLUSIVE MODE")
            while not any(client.waiting for client in clients):
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # the saves of the messages sent meanwhile are queued behind the lock too
            in_flight_at_restart = sum(client.waiting for client in clients)
            await asyncio.to_thread(restartable_postgres.restart)  # pg_ctl restart -m fast
            restarted.set()
            with contextlib.suppress(psycopg.Error):
                await blocker.close()

        await asyncio.gather(restart_with_turns_in_flight(), *(talk(client) for client in clients))

        # Every answer a client got is stored, under its own turn id, in its own conversation.
        for client in clients:
            session_id = client.chat.session["session_id"]
            stored = {row[0] for row in rows(url, "SELECT turn_id FROM turns WHERE conversation_id = %s", (session_id,))}
            assert set(client.answered) <= stored, f"answered but not stored: {set(client.answered) - stored}"
            assert client.answered_after_restart >= after_restart
        # The turns cut by the restart were tried again (each then answered, or refused with storage_failed).
        retried = server.log_path.read_text(errors="replace").count("trying again") if server.log_path else 0
        assert in_flight_at_restart >= 1 and retried >= 1
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/health").json()["status"] == "ok"
        refused = sum(len(client.refused) for client in clients)
        answered = sum(len(client.answered) for client in clients)
        print(f"restart under load: {in_flight_at_restart} sessions waiting on a save at the restart, {answered} answered (all stored), "
              f"{refused} refused with storage_failed, {retried} retries logged")
        for client in clients:
            await client.chat.close()
    finally:
        server.stop()
