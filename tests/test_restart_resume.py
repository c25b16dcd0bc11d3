"""Stop the server mid-conversation, start it again, resume with the token: nothing is forgotten."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import ChatClient, ServerProcess, authorized, fresh_data_dir
from tests.storage_backends import BackendUnderTest


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
async def test_restart_and_resume_remembers_order_id(tmp_path: Path, trained_models: Path, stop_signal: int,
                                                     storage_backend: BackendUnderTest) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", trained_models)
    first = ServerProcess(data_dir, extra_env=storage_backend.env()).start()
    try:
        chat = await ChatClient.open(first.ws_url, language="en")
        token, session_id = chat.session["token"], chat.session["session_id"]
        await chat.say("where is my order 54321?")
        reply = await chat.say("anna.schmidt@example.com")
        assert "54321" in reply["text"] and "Router AX3000" in reply["text"]
    finally:
        first.stop(stop_signal)

    second = ServerProcess(data_dir, extra_env=storage_backend.env()).start()
    try:
        resumed = await ChatClient.open(second.ws_url, token=token)
        assert resumed.session["resumed"] is True and resumed.session["session_id"] == session_id
        assert resumed.session["history"][0]["user"] == "where is my order 54321?"
        # "cancel it" needs the order id, and the proof of owning it, from before the restart.
        confirm = await resumed.say("please cancel it")
        assert "54321" in confirm["text"] and confirm["trace"]["state"]["awaiting_confirmation"] == "cancel_order"
        assert confirm["trace"]["identification"]["via"] == "session" and confirm["trace"]["turn"] == 3
        await resumed.close()
        # Every answered turn is in the configured database itself (read below the backend).
        assert storage_backend.raw_rows(f"SELECT turn_index FROM turns WHERE conversation_id = '{session_id}' ORDER BY turn_index") == [
            (1,), (2,), (3,)]
    finally:
        second.stop()


async def test_reconnect_with_token_continues_same_conversation(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="de")
    await chat.say("Wo ist meine Bestellung?")
    await chat.close()
    again = await ChatClient.open(server.ws_url, token=chat.session["token"])
    assert again.session["language"] == "de"
    asked = await again.say("12345")  # answers the question asked before the reconnect
    assert "12345" in asked["text"] and asked["trace"]["identification"]["result"] == "ask"
    answer = await again.say("meine Telefonnummer ist +86 138 0013 8000")
    assert "12345" in answer["text"] and answer["trace"]["action"]["name"] == "lookup_order"
    await again.close()


async def test_unknown_token_is_refused_clearly(server: ServerProcess) -> None:
    import json

    from websockets.asyncio.client import connect

    async with connect(await authorized(server.ws_url)) as ws:
        await ws.send(json.dumps({"type": "resume", "token": "not-a-real-token"}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "resume_failed"
        await ws.send(json.dumps({"type": "start"}))  # the connection goes on
        assert json.loads(await ws.recv())["type"] == "session"
