"""The storage contract (voicebot/storage/base.py) kept alike by SQLite and a real PostgreSQL.

Each test runs on both built-in backends (``storage_backend``): conversations, turns with their
traces, the state a resume continues from, profiles, feedback, interruptions, tenants, reading
back, counting, the export, and concurrent sessions saving turns at the same moment.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.storage_backends import BackendUnderTest
from voicebot.core.session import DialogueState, SlotValue
from voicebot.privacy.crypto import TextCipher
from voicebot.privacy.sealing import Sealer
from voicebot.storage.analytics import ANALYTICS_KEYS, PERCENTILES, AnalyticsQuery, nearest_rank
from voicebot.storage.base import CONVERSATION_KEYS, RESUME_KEYS, TURN_KEYS, Storage, StoredTurn
from voicebot.storage.postgres import PostgresStorage
from voicebot.storage.sqlite import SqliteStorage


def turn(conversation_id: str, index: int, text: str = "where is my order 12345?", trace: dict | None = None) -> StoredTurn:  # type: ignore[type-arg]
    trace = trace if trace is not None else {"intent": {"name": "order_status", "confidence": 0.9}, "turn": index, "timings_ms": {"nlu": 1.5}}
    return StoredTurn(conversation_id, index, f"{conversation_id}-t{index}", text, f"answer {index}", "en", "order_status", "action", trace)


def state_after(index: int, order: str = "12345", language: str = "en") -> DialogueState:
    state = DialogueState(language=language, active_intent="order_status", turn_count=index)
    state.slots["order_id"] = SlotValue(order, 1.0, index, f"order {order}")
    return state


async def test_a_conversation_its_turns_traces_and_state_round_trip(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open()
    try:
        await storage.create_conversation("c1", "token-1", "websocket", "en", "customer-1", DialogueState(language="en"))
        await storage.save_turn(turn("c1", 1), state_after(1), "active")
        await storage.save_turn(turn("c1", 2, "und auf Deutsch?"), state_after(2, language="de"), "handed_off")
        # Saving the same index again replaces that turn (its rating goes with the old text).
        assert await storage.rate_turn("c1", turn_index=2, rating=1) is True
        await storage.save_turn(turn("c1", 2, "and in German?", trace={"replaced": True}), state_after(2, language="de"), "handed_off")

        conversation = await storage.get_conversation("c1")
        assert conversation is not None and set(CONVERSATION_KEYS) | {"turns", "state"} == set(conversation)
        assert (conversation["turn_count"], conversation["status"], conversation["language"]) == (2, "handed_off", "de")
        assert [set(t) for t in conversation["turns"]] == [set(TURN_KEYS)] * 2
        first, second = conversation["turns"]
        assert (first["turn_index"], first["turn_id"], first["user_text"], first["bot_text"]) == (1, "c1-t1", "where is my order 12345?", "answer 1")
        assert first["trace"] == {"intent": {"name": "order_status", "confidence": 0.9}, "turn": 1, "timings_ms": {"nlu": 1.5}}
        assert (second["user_text"], second["trace"], second["rating"], second["interrupted"]) == ("and in German?", {"replaced": True}, None, 0)
        assert conversation["state"]["slots"]["order_id"]["value"] == "12345"

        info, state = await storage.resume("token-1")  # type: ignore[misc]
        assert set(info) == set(RESUME_KEYS) and (info["id"], info["turn_count"], info["tenant"], info["user_id"]) == ("c1", 2, "default", "customer-1")
        assert state.slot_value("order_id") == "12345" and state.language == "de"
        assert await storage.resume("token-unknown") is None

        # The customer's next conversation starts in the language they last used.
        profile = await storage.get_profile("customer-1")
        assert profile is not None and profile["preferred_language"] == "de" and profile["data"] == {}
        assert await storage.get_profile("nobody") is None

        # A conversation handed off to a human keeps that status when it ends; another one ends.
        await storage.create_conversation("c2", "token-2", "webrtc", "en", None, DialogueState(language="en"))
        await storage.end_conversation("c1")
        await storage.end_conversation("c2")
        assert (await storage.get_conversation("c1"))["status"] == "handed_off"  # type: ignore[index]
        assert (await storage.get_conversation("c2"))["status"] == "ended"  # type: ignore[index]
        assert await storage.count_turns() == 2 and await storage.integrity_ok()
    finally:
        await storage.close()

    # Everything is still there after closing and opening again (the schema is not re-created).
    storage = await storage_backend.open()
    try:
        assert (await storage.get_conversation("c1"))["turns"][1]["user_text"] == "and in German?"  # type: ignore[index]
    finally:
        await storage.close()


async def test_feedback_and_interruptions_land_on_the_turn_they_name(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open()
    try:
        await storage.create_conversation("c1", "token-1", "websocket", "en", None, DialogueState(language="en"), tenant="acme")
        for index in (1, 2):
            await storage.save_turn(turn("c1", index), state_after(index), "active")
        assert await storage.rate_turn("c1", turn_id="c1-t1", rating=-1, comment="wrong") is True
        assert await storage.rate_turn("c1", turn_index=1, rating=1, comment="better now") is True  # replaces rating and comment
        assert await storage.rate_turn("c1", turn_index=3, rating=1) is False
        assert await storage.rate_turn("c1", turn_index=2, rating=1, tenant="globex") is False  # another tenant's conversation
        assert await storage.rate_turn("c1", turn_index=2, rating=-1, tenant="acme") is True
        assert await storage.rate_conversation("c1", rating=5, comment="great") is True
        assert await storage.rate_conversation("c1", rating=1, tenant="globex") is False
        assert await storage.rate_conversation("nope", rating=3) is False
        for bad in ({"rating": 0, "turn_index": 1}, {"rating": 1}, {"rating": 1, "turn_index": 1, "turn_id": "c1-t1"}):
            with pytest.raises(ValueError):
                await storage.rate_turn("c1", **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await storage.rate_conversation("c1", rating=6)
        assert await storage.record_interruption("c1", "c1-t2", "answer") is True
        assert await storage.record_interruption("c1", "no-such-turn", "x") is False

        conversation = await storage.get_conversation("c1", tenant="acme")
        assert conversation is not None and (conversation["rating"], conversation["feedback"]) == (5, "great")
        assert [(t["rating"], t["feedback"], t["interrupted"], t["delivered_text"]) for t in conversation["turns"]] == [
            (1, "better now", 0, None), (-1, None, 1, "answer")]
        assert await storage.get_conversation("c1", tenant="globex") is None  # as if it did not exist
    finally:
        await storage.close()


async def test_listing_pages_by_recency_within_a_tenant_and_the_export_streams_every_turn(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open()
    try:
        for number in range(5):
            conversation_id = f"c{number}"
            await storage.create_conversation(conversation_id, f"token-{number}", "websocket", "en", None, DialogueState(language="en"),
                                              tenant="acme" if number % 2 else "default")
            await storage.save_turn(turn(conversation_id, 1), state_after(1), "active")
        await storage.save_turn(turn("c0", 2), state_after(2), "active")  # c0 is now the most recent
        await storage.rate_conversation("c3", rating=4)

        total, page = await storage.list_conversations(2, 0)
        assert total == 5 and [item["id"] for item in page] == ["c0", "c4"]
        total, page = await storage.list_conversations(10, 0, tenant="acme")
        assert total == 2 and {item["id"] for item in page} == {"c1", "c3"} and all(set(item) == set(CONVERSATION_KEYS) for item in page)
        assert (await storage.list_conversations(10, 4))[1][0]["id"] == "c1"

        exported = [item async for item in storage.export_turns()]
        assert [(item.conversation_id, item.bot_text) for item in exported] == [
            ("c0", "answer 1"), ("c0", "answer 2"), ("c1", "answer 1"), ("c2", "answer 1"), ("c3", "answer 1"), ("c4", "answer 1")]
        assert next(item for item in exported if item.conversation_id == "c3").conversation_rating == 4
        assert exported[0].trace["intent"]["name"] == "order_status"
    finally:
        await storage.close()


async def test_turns_saved_by_many_sessions_at_once_are_all_stored_with_their_own_state(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open()
    sessions, turns = 40, 5
    try:
        for number in range(sessions):
            await storage.create_conversation(f"s{number}", f"token-{number}", "websocket", "en", f"user-{number}", DialogueState(language="en"))

        async def session(number: int) -> None:
            for index in range(1, turns + 1):
                await storage.save_turn(turn(f"s{number}", index, f"message {index} of {number}"), state_after(index, order=str(number)), "active")

        await asyncio.gather(*(session(number) for number in range(sessions)))
        assert await storage.count_turns() == sessions * turns
        for number in (0, sessions // 2, sessions - 1):
            info, state = await storage.resume(f"token-{number}")  # type: ignore[misc]
            assert info["turn_count"] == turns and state.slot_value("order_id") == str(number)
            conversation = await storage.get_conversation(f"s{number}")
            assert [t["user_text"] for t in conversation["turns"]] == [f"message {i} of {number}" for i in range(1, turns + 1)]  # type: ignore[index]
        assert await storage.integrity_ok()
    finally:
        await storage.close()


async def test_a_tool_does_not_create_a_store_where_none_is(storage_backend: BackendUnderTest) -> None:
    storage = storage_backend.storage()
    with pytest.raises(FileNotFoundError):
        await storage.open(create=False)
    await storage.close()


async def test_a_turn_that_cannot_be_stored_fails_alone_and_the_turns_saved_with_it_are_kept(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open()
    try:
        for number in range(6):
            await storage.create_conversation(f"c{number}", f"token-{number}", "websocket", "en", None, DialogueState(language="en"))
        saves = [storage.save_turn(turn(f"c{number}", 1), state_after(1), "active") for number in range(6)]
        saves.insert(3, storage.save_turn(turn("never-started", 1), state_after(1), "active"))  # no such conversation
        results = await asyncio.gather(*saves, return_exceptions=True)  # committed together, as concurrent sessions' turns are
        assert [isinstance(result, Exception) for result in results] == [False, False, False, True, False, False, False]
        assert storage_backend.raw_rows("SELECT COUNT(*) FROM turns") == [(6,)]
        assert await storage.integrity_ok()
    finally:
        await storage.close()


# -- the dashboard and the insights: PostgreSQL counts what SQLite counts ---------------------------
BASE = 1_700_000_000.0  # the seeded period starts here; turns are spread over its first three hours
LANGUAGES = ("en", "de", "fr", "en", "es")
INTENTS = ("order_status", None, "refund", "order_status", "greeting", None)
PATHS = ("action", "fallback", "handoff", "action", "action", "answer", "action")


def seeded_turn(conversation_id: str, index: int, number: int) -> tuple[StoredTurn, float]:
    """The ``number``-th turn of the seed, and when it was said: every fact the dashboard counts
    varies (language, intent, path, hand-off reason, unanswered reason, sentiment, timings)."""
    path = PATHS[number % len(PATHS)]
    response: dict[str, object] = {"key": "kb_not_found" if number % 6 == 3 else "answer"}
    if path == "handoff":
        response["handoff_reason"] = "asked_for_human" if number % 2 else "angry_customer"
    elif number % 11 == 0:
        response["handoff_reason"] = "repeated_failure"
    trace: dict[str, object] = {"intent": {"name": INTENTS[number % len(INTENTS)], "out_of_scope": number % 5 == 0}, "response": response}
    if number % 3:
        trace["sentiment"] = {"score": (number % 9 - 4) / 4}  # quarters: their sums are exact in any order
    if number % 4 != 1:
        trace["timings_ms"] = {"asr": 40 + (number * 37) % 23 + number / 8, "nlu": 2 + number % 5, **({"tts": 90.5 + number} if number % 2 else {})}
    stored = StoredTurn(conversation_id, index, f"{conversation_id}-t{index}", f"question {number}: my card 4111 is blocked",
                        f"answer {number}", LANGUAGES[number % len(LANGUAGES)], INTENTS[number % len(INTENTS)], path, trace)
    return stored, BASE + 97.25 * number + (number % 3) * 0.5


# (conversation, tenant, customer, created after BASE (s), stars, turns)
SEED_CONVERSATIONS = (("c0", "default", "u1", 10.0, 5, 14), ("c1", "default", "u2", 3700.0, 2, 9), ("c2", "acme", "u3", 3800.0, None, 11),
                      ("c3", "acme", None, 7300.0, 4, 8), ("c4", "default", "u1", -30 * 86400.0, 1, 3))


SetTimes = Callable[[list[tuple[float, str]], list[tuple[float, str, int]]], None]  # (created_at, id), (created_at, id, index)


async def seed_dashboard(storage: Storage, set_times: SetTimes) -> None:
    """The same conversations, turns, ratings and times on any backend (times set below it, with its driver)."""
    number = 0
    conversation_times: list[tuple[float, str]] = []
    turn_times: list[tuple[float, str, int]] = []
    for conversation_id, tenant, user, created, stars, count in SEED_CONVERSATIONS:
        await storage.create_conversation(conversation_id, f"token-{conversation_id}", "websocket", "en", user, DialogueState(language="en"),
                                          tenant=tenant)
        conversation_times.append((BASE + created, conversation_id))
        for index in range(1, count + 1):
            stored, at = seeded_turn(conversation_id, index, number)
            await storage.save_turn(stored, state_after(index), "handed_off" if stored.path == "handoff" else "active")
            turn_times.append((at if created >= 0 else BASE + created + index, conversation_id, index))
            if number % 4 == 2:
                assert await storage.rate_turn(conversation_id, turn_index=index, rating=-1 if number % 8 == 2 else 1)
            number += 1
        if stars is not None:
            assert await storage.rate_conversation(conversation_id, rating=stars)
    set_times(conversation_times, turn_times)


def sqlite_times(path: Path) -> SetTimes:
    def set_times(conversations: list[tuple[float, str]], turns: list[tuple[float, str, int]]) -> None:
        with sqlite3.connect(path) as db:
            db.executemany("UPDATE conversations SET created_at = ? WHERE id = ?", conversations)
            db.executemany("UPDATE turns SET created_at = ? WHERE conversation_id = ? AND turn_index = ?", turns)
    return set_times


def postgres_times(url: str) -> SetTimes:
    def set_times(conversations: list[tuple[float, str]], turns: list[tuple[float, str, int]]) -> None:
        with psycopg.connect(url) as db, db.cursor() as cursor:
            cursor.executemany("UPDATE conversations SET created_at = %s WHERE id = %s", conversations)
            cursor.executemany("UPDATE turns SET created_at = %s WHERE conversation_id = %s AND turn_index = %s", turns)
    return set_times


async def test_the_dashboard_and_the_unanswered_turns_count_alike_on_sqlite_and_postgresql(tmp_path: Path, postgres_url: str) -> None:
    key = Fernet.generate_key().decode()
    sealer = Sealer(TextCipher([key], "test"), encrypt=True)
    sqlite_storage, postgres_storage = SqliteStorage(tmp_path / "db.sqlite", sealer), PostgresStorage(postgres_url, sealer)
    await sqlite_storage.open()
    await postgres_storage.open()
    try:
        await seed_dashboard(sqlite_storage, sqlite_times(tmp_path / "db.sqlite"))
        await seed_dashboard(postgres_storage, postgres_times(postgres_url))
        whole = AnalyticsQuery(BASE, BASE + 4 * 3600, 3600)
        queries = [whole, AnalyticsQuery(BASE, BASE + 4 * 3600, 3600, tenant="acme"), AnalyticsQuery(BASE, BASE + 4 * 3600, 900),
                   AnalyticsQuery(BASE + 1800, BASE + 2.5 * 3600, 1234.5, tenant="default"),  # a period cut inside buckets and turns
                   AnalyticsQuery(int(BASE) - 40 * 86400, int(BASE), 86400),  # int bounds: only the old conversation
                   AnalyticsQuery(BASE - 10 * 86400, BASE - 9 * 86400, 3600)]  # nothing at all
        for query in queries:
            expected = await sqlite_storage.analytics(query)
            assert await postgres_storage.analytics(query) == expected, query
            for limit in (3, 100):
                assert await postgres_storage.unanswered_turns(query, limit) == await sqlite_storage.unanswered_turns(query, limit), (query, limit)

        # What is compared is worth comparing: every key has rows, counted as the seed says.
        found = await postgres_storage.analytics(whole)
        assert set(found) == set(ANALYTICS_KEYS) and all(found.values())
        assert found["outcomes"] == [(4, 4)] and found["sessions"] == [(0, 1), (1, 2), (2, 1)]
        assert found["intents"][:2] == [(None, 14), ("order_status", 14)]  # a missing intent is counted, first on a tie (as NULL in SQLite)
        assert found["ratings"] == [(2, 1), (4, 1), (5, 1)]
        nlu = sorted(2.0 + n % 5 for n in range(42) if n % 4 != 1 and seeded_turn("x", 1, n)[1] < BASE + 3600)
        assert [row[2:] for row in found["latency"] if row[:2] == (0, "nlu")] == [(*(nearest_rank(nlu, p) for p in PERCENTILES), len(nlu))]
        unanswered = await postgres_storage.unanswered_turns(whole, 100)
        assert unanswered and {row["reason"] for row in unanswered} == {"fallback", "out_of_scope", "kb_not_found", "repeated_failure", "rated_down"}
        assert all(row["user_text"].startswith("question ") for row in unanswered)  # opened from its sealed form
        assert [row["created_at"] for row in unanswered] == sorted((row["created_at"] for row in unanswered), reverse=True)
        with psycopg.connect(postgres_url) as db:
            stored = db.execute("SELECT user_text, handoff_reason, timings FROM turns WHERE conversation_id = 'c0' AND turn_index = 3").fetchone()
        assert stored is not None and not stored[0].startswith("question") and stored[1] == "angry_customer"
        assert set(stored[2]) == {"asr", "nlu", "turn"}  # the facts in clear beside the sealed text
    finally:
        await sqlite_storage.close()
        await postgres_storage.close()


async def test_a_turn_with_a_timing_that_is_not_a_number_is_stored_and_the_dashboard_still_counts(storage_backend: BackendUnderTest) -> None:
    storage = await storage_backend.open()
    try:
        await storage.create_conversation("c1", "token-1", "websocket", "en", None, DialogueState(language="en"))
        broken = {"intent": {"name": "order_status"}, "timings_ms": {"asr": float("nan"), "tts": float("inf"), "nlu": 4.0}}  # a plugin's bad clock
        await storage.save_turn(turn("c1", 1, trace=broken), state_after(1), "active")
        await storage.save_turn(turn("c1", 2), state_after(2), "active")
        found = await storage.analytics(AnalyticsQuery(0, 2e9, 1e9))
        assert found["turns"] == [(1, 2)]
        assert [row[1:] for row in found["latency"]] == [("nlu", 1.5, 4.0, 4.0, 2), ("turn", 1.5, 4.0, 4.0, 2)]
    finally:
        await storage.close()
