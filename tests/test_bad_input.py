"""Bad input gets a clear error; the session, other sessions and stored data are unharmed."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ChatClient, ServerProcess, authorized


async def _error_for(ws, frame: str | bytes) -> dict:  # type: ignore[no-untyped-def]
    await ws.send(frame)
    while True:
        reply = json.loads(await ws.recv())
        if reply["type"] == "error":
            return reply


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2, 3]", "invalid_message"),
        ('"just a string"', "invalid_message"),
        ('{"no_type": 1}', "invalid_message"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "message", "text": 42}', "invalid_message"),
        ('{"type": "message"}', "invalid_message"),
        ('{"type": "message", "text": "hi", "extra": true}', "invalid_message"),
        ('{"type": "message", "text": ""}', "empty_message"),
        ('{"type": "message", "text": "\\u0000\\u0007\\u200b  "}', "empty_message"),
        (json.dumps({"type": "message", "text": "x" * 100_000}), "message_too_long"),
        (b"\x00\x01binary", "binary_not_supported"),
        ('{"type": "start"}', "already_started"),
    ],
)
async def test_each_bad_frame_gets_a_clear_error_and_the_session_goes_on(server: ServerProcess, frame: str | bytes, code: str) -> None:
    chat = await ChatClient.open(server.ws_url, language="en")
    first = await chat.say("where is my order?")
    error = await _error_for(chat.ws, frame)
    assert error["code"] == code and error["message"]
    # Same connection, same session: the bot still remembers it asked for the order number.
    answer = await chat.say("12345")
    assert "12345" in answer["text"] and answer["trace"]["turn"] == first["trace"]["turn"] + 1
    await chat.close()


async def test_message_before_start_is_refused(server: ServerProcess) -> None:
    async with connect(await authorized(server.ws_url)) as ws:
        error = await _error_for(ws, json.dumps({"type": "message", "text": "hello"}))
        assert error["code"] == "no_session"


async def test_control_characters_and_mixed_scripts_are_handled(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="en")
    reply = await chat.say("where\u0000 is my\u200b order 12345\u0007")
    assert "12345" in reply["text"]
    mixed = await chat.say("hello 你好 hola Привет مرحبا 🙂")
    assert mixed["text"]  # some answer, no crash
    stored = httpx.get(f"{server.url}/api/conversations/{chat.session['session_id']}", headers=server.admin_headers, timeout=10).json()
    assert stored["turns"][0]["user_text"] == "where is my order 12345"
    await chat.close()


async def test_oversized_frame_closes_only_that_socket(server: ServerProcess) -> None:
    bystander = await ChatClient.open(server.ws_url, language="en")
    await bystander.say("where is my order?")
    async with connect(await authorized(server.ws_url), max_size=None) as ws:
        await ws.send(json.dumps({"type": "start"}))
        json.loads(await ws.recv())
        await ws.send("x" * (2 * 1024 * 1024))  # above server.max_frame_bytes
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(5):
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
    answer = await bystander.say("12345")
    assert "12345" in answer["text"]
    await bystander.close()


async def test_bad_input_leaves_stored_data_intact(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="en")
    await chat.say("where is my order 67890")
    before = httpx.get(f"{server.url}/api/conversations/{chat.session['session_id']}", headers=server.admin_headers, timeout=10).json()
    for frame in ["{", '{"type": 1}', b"\xff" * 10, '{"type": "message", "text": null}']:
        await _error_for(chat.ws, frame)
    after = httpx.get(f"{server.url}/api/conversations/{chat.session['session_id']}", headers=server.admin_headers, timeout=10).json()
    assert after["turns"] == before["turns"] and after["state"] == before["state"]
    await chat.close()


async def test_client_vanishing_mid_turn_still_stores_the_turn(server: ServerProcess) -> None:
    ws = await connect(await authorized(server.ws_url))
    await ws.send(json.dumps({"type": "start", "language": "en"}))
    session = json.loads(await ws.recv())
    await ws.send(json.dumps({"type": "message", "text": "where is my order 12345"}))
    await ws.close()  # gone before the answer
    for _ in range(50):
        stored = httpx.get(f"{server.url}/api/conversations/{session['session_id']}", headers=server.admin_headers, timeout=10).json()
        if stored["turns"]:
            break
        import asyncio

        await asyncio.sleep(0.1)
    assert stored["turns"][0]["user_text"] == "where is my order 12345"
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


async def test_rest_api_rejects_bad_parameters(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/api/conversations", params={"limit": "lots"}, headers=server.admin_headers, timeout=10)
    assert response.status_code == 422 and "limit" in response.text
    assert httpx.get(f"{server.url}/api/conversations", params={"limit": 0}, headers=server.admin_headers, timeout=10).status_code == 422
