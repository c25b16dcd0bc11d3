"""What only the PostgreSQL backend has to get right: migrations when several workers start at once,
a clear error when the server is not there, and turns saved through a server restart or refused
(never hung) while it is down. Real PostgreSQL servers (tests/pg_server.py) throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from tests.pg_server import PostgresServer
from voicebot.config import ConfigError
from voicebot.core.session import DialogueState
from voicebot.storage.analytics import AnalyticsQuery
from voicebot.storage.base import StoredTurn
from voicebot.storage.postgres import PostgresStorage, StorageUnavailableError
from voicebot.storage.postgres_schema import LATEST_VERSION, migrations

# Generous bound for "did not hang": far above any retry budget below, and not a timing assert.
HANG = 120
# What a call gets while the server is away, once its retries are spent (the runtime answers storage_failed).
UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)


def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(sql.encode()).fetchall()


def a_turn(conversation_id: str, index: int) -> StoredTurn:
    return StoredTurn(conversation_id, index, f"turn-{index}", f"message {index}", f"answer {index}", "en", None, "template", {"turn": index})


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and restart without touching the session's."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


async def test_workers_starting_together_migrate_once(postgres_url: str) -> None:
    workers = [PostgresStorage(postgres_url) for _ in range(8)]
    try:
        await asyncio.gather(*(worker.open() for worker in workers))  # eight pools, eight sessions racing for the schema
        assert rows(postgres_url, "SELECT version FROM schema_migrations ORDER BY version") == [(m.version,) for m in migrations()]
        assert all([await worker.integrity_ok() for worker in workers])
        # Every worker writes to the one schema.
        for number, worker in enumerate(workers):
            await worker.create_conversation(f"c{number}", f"token-{number}", "websocket", "en", None, DialogueState(language="en"))
        assert rows(postgres_url, "SELECT COUNT(*) FROM conversations") == [(8,)]
    finally:
        await asyncio.gather(*(worker.close() for worker in workers))


async def test_a_schema_from_a_newer_version_still_opens_and_an_older_one_is_upgraded(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    await storage.open()
    await storage.close()
    with psycopg.connect(postgres_url) as db:  # a later release added migration 9999 (additive, by the rules)
        db.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')")
    storage = PostgresStorage(postgres_url)
    await storage.open()
    try:
        assert await storage.integrity_ok()
    finally:
        await storage.close()
    # A database that lost track of a migration gets it applied again at open.
    with psycopg.connect(postgres_url) as db:
        db.execute("DROP TABLE audit_log")
        db.execute("DELETE FROM schema_migrations")
        db.execute("DROP TABLE turns, dialogue_state, user_profiles, conversations")
    storage = PostgresStorage(postgres_url)
    await storage.open()
    try:
        assert await storage.write_audit("check", "test", None, {"n": 1}) > 0
        assert rows(postgres_url, "SELECT MAX(version) FROM schema_migrations") == [(LATEST_VERSION,)]
    finally:
        await storage.close()


async def test_a_database_of_the_first_release_gets_the_dashboard_columns_and_keeps_its_turns(postgres_url: str) -> None:
    first = migrations()[0]
    assert first.version == 1
    with psycopg.connect(postgres_url) as db:  # what the first release left: migration 0001 and a turn written by it
        db.execute(first.sql.encode())
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        db.execute("INSERT INTO schema_migrations (version, name) VALUES (1, %s)", (first.name,))
        db.execute("INSERT INTO conversations (id, token_hash, channel, language, created_at, updated_at) VALUES ('old', 'h', 'websocket', 'de', 10, 10)")
        db.execute("INSERT INTO dialogue_state (conversation_id, state, updated_at) VALUES ('old', '{}', 10)")
        db.execute("INSERT INTO turns (conversation_id, turn_index, turn_id, user_text, bot_text, language, path, trace, created_at) "
                   "VALUES ('old', 1, 't1', 'hallo', 'hi', 'de', 'fallback', '{}', 20)")
    storage = PostgresStorage(postgres_url)
    await storage.open()
    try:
        assert rows(postgres_url, "SELECT version FROM schema_migrations ORDER BY version") == [(m.version,) for m in migrations()]
        await storage.create_conversation("new", "token-new", "websocket", "en", None, DialogueState(language="en"))
        await storage.save_turn(StoredTurn("new", 1, "n1", "hi", "hello", "en", None, "fallback", {"timings_ms": {"nlu": 3.0}}),
                                DialogueState(language="en"), "active")
        found = await storage.analytics(AnalyticsQuery(0, 2e9, 1e9))
        assert found["languages"] == [("de", 1), ("en", 1)]  # the old turn still counts, without the facts it was not stored with
        assert [row[1:] for row in found["latency"]] == [("nlu", 3.0, 3.0, 3.0, 1), ("turn", 3.0, 3.0, 3.0, 1)]
        assert [row["conversation_id"] for row in await storage.unanswered_turns(AnalyticsQuery(0, 2e9, 1e9), 10)] == ["new"]
        assert await storage.set_status("old", "callback") and [c["id"] for c in await storage.list_by_status(["callback"])] == ["old"]
        assert await storage.integrity_ok()
    finally:
        await storage.close()


async def test_an_unreachable_server_is_a_clear_error_at_start_without_the_password(private_postgres: PostgresServer) -> None:
    private_postgres.stop()
    url = f"postgresql://voicebot:s3cret-pw@127.0.0.1:{private_postgres.port}/voicebot"
    storage = PostgresStorage(url, options=PostgresStorage.Options(url=url, start_timeout_s=2, connect_timeout_s=1))  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailableError) as refused:
        await asyncio.wait_for(storage.open(), HANG)
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError)  # `voicebot serve` prints it and exits 2, no traceback
    assert message.startswith("storage.url: cannot use PostgreSQL at 127.0.0.1:") and "refused" in message and "s3cret-pw" not in message


async def test_turns_saved_while_the_server_restarts_are_retried_and_all_stored(private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database("voicebot")
    # Retries long enough for a restart on a loaded machine: every save must get through.
    storage = PostgresStorage(url, options=PostgresStorage.Options(url=url, retry_for_s=60, connect_timeout_s=2))  # type: ignore[arg-type]
    await storage.open()
    sessions = 6
    restarted = asyncio.Event()
    saved: dict[str, int] = {}

    async def session(number: int) -> None:
        conversation_id = f"c{number}"
        await storage.create_conversation(conversation_id, f"token-{number}", "websocket", "en", None, DialogueState(language="en"))
        index = 0
        while not restarted.is_set() or index < 40:  # saving before, during and after the restart
            index += 1
            await storage.save_turn(a_turn(conversation_id, index), DialogueState(language="en", turn_count=index), "active")
            saved[conversation_id] = index
            await asyncio.sleep(0.005)

    async def restart() -> None:
        while len(saved) < sessions or min(saved.values()) < 5:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(private_postgres.restart)  # pg_ctl restart -m fast: connections cut mid-statement
        restarted.set()

    try:
        await asyncio.wait_for(asyncio.gather(restart(), *(session(number) for number in range(sessions))), HANG)
        for conversation_id, last in saved.items():
            assert rows(url, f"SELECT COUNT(*), MAX(turn_index) FROM turns WHERE conversation_id = '{conversation_id}'") == [(last, last)]
        assert await storage.integrity_ok()
    finally:
        await storage.close()


async def test_while_the_server_is_down_a_save_fails_instead_of_hanging_and_recovers_after(private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database("voicebot")
    storage = PostgresStorage(url, options=PostgresStorage.Options(url=url, retry_for_s=2, connect_timeout_s=1))  # type: ignore[arg-type]
    await storage.open()
    try:
        await storage.create_conversation("c1", "token-1", "websocket", "en", None, DialogueState(language="en"))
        await storage.save_turn(a_turn("c1", 1), DialogueState(language="en", turn_count=1), "active")

        # Down for longer than the retries: the save fails (the caller tells the client), it does not hang.
        private_postgres.stop()
        with pytest.raises(UNAVAILABLE):
            await asyncio.wait_for(storage.save_turn(a_turn("c1", 2), DialogueState(language="en", turn_count=2), "active"), HANG)
        with pytest.raises(UNAVAILABLE):
            await asyncio.wait_for(storage.resume("token-1"), HANG)

        # Back again: the same storage object carries on.
        await asyncio.to_thread(private_postgres.start)
        await asyncio.wait_for(storage.save_turn(a_turn("c1", 3), DialogueState(language="en", turn_count=3), "active"), HANG)
        assert rows(url, "SELECT turn_index FROM turns ORDER BY turn_index") == [(1,), (3,)]
        found = await storage.resume("token-1")
        assert found is not None and found[0]["turn_count"] == 3
    finally:
        await storage.close()


async def test_a_retried_conversation_start_is_recognised_and_a_taken_id_refused(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    await storage.open()
    try:
        # The same start twice (what a retry after a cut commit does) is one conversation.
        for _ in range(2):
            await storage.create_conversation("c1", "token-1", "websocket", "en", "customer-1", DialogueState(language="en"))
        assert rows(postgres_url, "SELECT COUNT(*) FROM conversations") == [(1,)]
        with pytest.raises(ValueError, match="already exists"):
            await storage.create_conversation("c1", "another-token", "websocket", "en", None, DialogueState(language="en"))
    finally:
        await storage.close()


async def test_closing_waits_for_the_turn_being_committed(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    await storage.open()
    await storage.create_conversation("c1", "token-1", "websocket", "en", None, DialogueState(language="en"))
    # A slow commit for real: another transaction holds the turns table, so the save waits inside its own.
    blocker = await psycopg.AsyncConnection.connect(postgres_url)
    await blocker.execute("LOCK TABLE turns IN EXCLUSIVE MODE")
    saving = asyncio.create_task(storage.save_turn(a_turn("c1", 1), DialogueState(language="en", turn_count=1), "active"))
    while not rows(postgres_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO turns%'"):
        await asyncio.sleep(0.05)
    closing = asyncio.create_task(storage.close())  # a shutdown while the turn is being committed
    await asyncio.sleep(0.2)
    await blocker.commit()  # the lock goes: the save finishes
    await blocker.close()
    await asyncio.wait_for(closing, HANG)
    await asyncio.wait_for(saving, HANG)  # submitted before close: stored, and the caller told so
    assert rows(postgres_url, "SELECT turn_index FROM turns") == [(1,)]
