"""Customer feedback: thumbs per answer and stars per conversation, over the websocket and REST,
validated, stored (SQLite, and PostgreSQL for the restart) and kept across a restart (and in SQLite
databases from before feedback)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.conftest import ChatClient, ServerProcess, authorized, fresh_data_dir
from tests.storage_backends import BackendUnderTest
from voicebot.core.session import DialogueState
from voicebot.storage.sqlite import SqliteStorage


async def _stored(server: ServerProcess, session_id: str) -> dict:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers) as client:
        response = await client.get(f"/api/conversations/{session_id}")
    assert response.status_code == 200
    return response.json()


async def test_websocket_feedback_on_an_answer_and_the_conversation(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="en")
    first = await chat.say("what payment methods do you accept?")
    second = await chat.say("where is my order 12345?")

    await chat.send({"type": "feedback", "turn_id": first["turn_id"], "rating": -1, "comment": "too long\x00 "})
    assert await chat.expect("feedback_saved") == {"type": "feedback_saved", "turn_id": first["turn_id"], "rating": -1}
    await chat.send({"type": "feedback", "turn_id": second["turn_id"], "rating": 1})
    assert (await chat.expect("feedback_saved"))["rating"] == 1
    await chat.send({"type": "feedback", "rating": 4, "comment": "quick, thanks"})
    assert await chat.expect("feedback_saved") == {"type": "feedback_saved", "rating": 4}

    stored = await _stored(server, chat.session["session_id"])
    assert (stored["rating"], stored["feedback"]) == (4, "quick, thanks")
    turns = {t["turn_id"]: t for t in stored["turns"]}
    assert (turns[first["turn_id"]]["rating"], turns[first["turn_id"]]["feedback"]) == (-1, "too long")  # cleaned
    assert (turns[second["turn_id"]]["rating"], turns[second["turn_id"]]["feedback"]) == (1, None)

    # A new rating replaces the old one, comment included; the conversation goes on.
    await chat.send({"type": "feedback", "turn_id": first["turn_id"], "rating": 1})
    await chat.expect("feedback_saved")
    assert "54321" in (await chat.say("and order 54321?"))["text"]
    stored = await _stored(server, chat.session["session_id"])
    assert [(t["rating"], t["feedback"]) for t in stored["turns"]] == [(1, None), (1, None), (None, None)]
    await chat.close()


@pytest.mark.parametrize(("frame", "code"), [
    ({"turn_id": "TURN", "rating": 0}, "invalid_rating"),
    ({"turn_id": "TURN", "rating": 5}, "invalid_rating"),
    ({"rating": 0}, "invalid_rating"),
    ({"rating": 6}, "invalid_rating"),
    ({"rating": -1}, "invalid_rating"),
    ({"rating": "5"}, "invalid_rating"),
    ({"rating": True}, "invalid_rating"),
    ({"rating": 4.5}, "invalid_rating"),
    ({}, "invalid_rating"),
    ({"turn_id": "nosuchturn", "rating": 1}, "unknown_turn"),
    ({"rating": 4, "comment": "x" * 2001}, "invalid_message"),
    ({"rating": 4, "stars": 4}, "invalid_message"),
    ({"turn_id": "", "rating": 1}, "invalid_message"),
])
async def test_bad_feedback_gets_an_error_and_the_session_goes_on(server: ServerProcess, frame: dict, code: str) -> None:  # type: ignore[type-arg]
    chat = await ChatClient.open(server.ws_url, language="en")
    answer = await chat.say("hello")
    frame = {**frame, "turn_id": answer["turn_id"]} if frame.get("turn_id") == "TURN" else frame
    await chat.send({"type": "feedback", **frame})
    error = await chat.expect("error")
    assert error["code"] == code, error
    # Nothing was stored, and the conversation still works.
    stored = await _stored(server, chat.session["session_id"])
    assert stored["rating"] is None and stored["turns"][0]["rating"] is None
    assert (await chat.say("what payment methods do you accept?"))["trace"]["knowledge"]["used"] == "payment_methods"
    await chat.close()


async def test_only_this_conversations_answers_can_be_rated(server: ServerProcess) -> None:
    mine = await ChatClient.open(server.ws_url, language="en")
    other = await ChatClient.open(server.ws_url, language="en")
    answer = await other.say("hello")
    await mine.send({"type": "feedback", "turn_id": answer["turn_id"], "rating": -1})
    assert (await mine.expect("error"))["code"] == "unknown_turn"
    assert (await _stored(server, other.session["session_id"]))["turns"][0]["rating"] is None
    await mine.close()
    await other.close()


async def test_feedback_before_start_is_refused(server: ServerProcess) -> None:
    from websockets.asyncio.client import connect

    async with connect(await authorized(server.ws_url)) as ws:
        await ws.send(json.dumps({"type": "feedback", "rating": 5}))
        assert json.loads(await ws.recv())["code"] == "no_session"


async def test_rest_feedback_and_its_validation(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="de")
    await chat.say("Wie lange habe ich Zeit für eine Rückgabe?")
    session_id = chat.session["session_id"]
    await chat.close()
    base = f"/api/conversations/{session_id}"
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin_headers) as client:
        assert (await client.post(f"{base}/feedback", json={"rating": 2, "comment": "zu langsam"})).json() == {"saved": True}
        assert (await client.post(f"{base}/turns/1/feedback", json={"rating": -1})).json() == {"saved": True}
        listed = (await client.get("/api/conversations", params={"limit": 500})).json()["items"]
        assert next(c for c in listed if c["id"] == session_id)["rating"] == 2

        assert (await client.post("/api/conversations/nope/feedback", json={"rating": 3})).status_code == 404
        assert (await client.post("/api/conversations/nope/turns/1/feedback", json={"rating": 1})).status_code == 404
        assert (await client.post(f"{base}/turns/99/feedback", json={"rating": 1})).status_code == 404
        for body in ({"rating": 0}, {"rating": 6}, {"rating": "3"}, {"rating": True}, {}, {"rating": 3, "extra": 1},
                     {"rating": 3, "comment": "x" * 2001}):
            assert (await client.post(f"{base}/feedback", json=body)).status_code == 422, body
        for body in ({"rating": 0}, {"rating": 2}, {"rating": 5}, {"rating": "1"}, {}):
            assert (await client.post(f"{base}/turns/1/feedback", json=body)).status_code == 422, body
        assert (await client.post(f"{base}/turns/first/feedback", json={"rating": 1})).status_code == 422

        stored = (await client.get(base)).json()
        assert (stored["rating"], stored["feedback"]) == (2, "zu langsam")
        assert stored["turns"][0]["rating"] == -1

        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert "post" in paths["/api/conversations/{conversation_id}/feedback"]
    assert "post" in paths["/api/conversations/{conversation_id}/turns/{turn_index}/feedback"]
    components = schema["components"]["schemas"]
    assert components["ConversationFeedback"]["properties"]["rating"]["maximum"] == 5
    assert components["TurnFeedback"]["properties"]["rating"]["enum"] == [-1, 1]
    assert "saved" in components["FeedbackSaved"]["properties"]


async def test_feedback_survives_a_restart(tmp_path: Path, trained_models: Path, storage_backend: BackendUnderTest) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", trained_models)
    first = ServerProcess(data_dir, extra_env=storage_backend.env()).start()
    try:
        chat = await ChatClient.open(first.ws_url, language="zh-CN")
        answer = await chat.say("退货政策是什么？")
        await chat.send({"type": "feedback", "turn_id": answer["turn_id"], "rating": 1, "comment": "很清楚"})
        await chat.expect("feedback_saved")
        await chat.send({"type": "feedback", "rating": 5})
        await chat.expect("feedback_saved")
        session_id, token = chat.session["session_id"], chat.session["token"]
        await chat.close()
    finally:
        first.stop()

    second = ServerProcess(data_dir, extra_env=storage_backend.env()).start()
    try:
        stored = await _stored(second, session_id)
        assert stored["rating"] == 5
        assert (stored["turns"][0]["rating"], stored["turns"][0]["feedback"]) == (1, "很清楚")
        # The resumed conversation can still be rated, through either door.
        resumed = await ChatClient.open(second.ws_url, token=token)
        await resumed.send({"type": "feedback", "turn_id": answer["turn_id"], "rating": -1})
        assert (await resumed.expect("feedback_saved"))["rating"] == -1
        await resumed.close()
        async with httpx.AsyncClient(base_url=second.url, headers=second.admin_headers) as client:
            assert (await client.post(f"/api/conversations/{session_id}/feedback", json={"rating": 3})).status_code == 200
        stored = await _stored(second, session_id)
        assert (stored["rating"], stored["turns"][0]["rating"]) == (3, -1)
        # In the configured database itself, below the backend.
        assert storage_backend.raw_rows(f"SELECT rating FROM conversations WHERE id = '{session_id}'") == [(3,)]
    finally:
        second.stop()


OLD_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, token_hash TEXT UNIQUE NOT NULL, channel TEXT NOT NULL, user_id TEXT,
    language TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active', turn_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE turns (conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE, turn_index INTEGER NOT NULL,
    turn_id TEXT NOT NULL, user_text TEXT NOT NULL, bot_text TEXT NOT NULL, language TEXT NOT NULL, intent TEXT, path TEXT NOT NULL,
    trace TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (conversation_id, turn_index));
INSERT INTO conversations VALUES ('c1', 'hash', 'websocket', NULL, 'en', 'ended', 1, 1.0, 1.0);
INSERT INTO turns VALUES ('c1', 1, 't1', 'hi', 'Hello!', 'en', 'greet', 'template', '{}', 1.0);
"""


async def test_a_database_from_before_feedback_gets_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "voicebot.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    storage = SqliteStorage(path)
    await storage.open()
    try:
        found = await storage.get_conversation("c1")
        assert found is not None and found["rating"] is None and found["turns"][0]["rating"] is None
        assert await storage.rate_turn("c1", turn_id="t1", rating=-1, comment="wrong") is True
        assert await storage.rate_turn("c1", turn_index=1, rating=1) is True
        assert await storage.rate_turn("c1", turn_index=2, rating=1) is False
        assert await storage.rate_turn("c2", turn_id="t1", rating=1) is False
        assert await storage.rate_conversation("c1", rating=5, comment="great") is True
        assert await storage.rate_conversation("c2", rating=5) is False
        with pytest.raises(ValueError):
            await storage.rate_conversation("c1", rating=0)
        with pytest.raises(ValueError):
            await storage.rate_turn("c1", turn_index=1, rating=0)
        found = await storage.get_conversation("c1")
        assert found is not None
        assert (found["rating"], found["feedback"], found["turns"][0]["rating"], found["turns"][0]["feedback"]) == (5, "great", 1, None)
        await storage.create_conversation("c3", "token-c3", "websocket", "en", None, DialogueState(language="en"))
        assert (await storage.list_conversations(10, 0))[0] == 2
    finally:
        await storage.close()
    await _storage_reopens(path)


async def _storage_reopens(path: Path) -> None:
    """Opening again (the columns already there) changes nothing."""
    storage = SqliteStorage(path)
    await storage.open()
    try:
        found = await storage.get_conversation("c1")
        assert found is not None and found["rating"] == 5
    finally:
        await storage.close()
