"""The storage contract (voicebot/storage/base.py) kept alike by SQLite and a real PostgreSQL.

Each test runs on both built-in backends (``storage_backend``): conversations, turns with their
traces, the state a resume continues from, profiles, feedback, interruptions, tenants, reading
back, counting, the export, and concurrent sessions saving turns at the same moment.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.storage_backends import BackendUnderTest
from voicebot.core.session import DialogueState, SlotValue
from voicebot.storage.base import CONVERSATION_KEYS, RESUME_KEYS, TURN_KEYS, StoredTurn


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
