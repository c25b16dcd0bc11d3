"""One real `voicebot serve` (SQLite) with and without Redis coordination: a message retried with
its client_id is answered once; Redis down refuses new conversations (503) while a live one
goes on; /ready says which dependency fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.chat_turns import turn
from tests.conftest import ADMIN_HEADERS, ChatClient, ServerProcess, fresh_data_dir, session_token
from tests.redis_server import RedisServer

pytestmark = pytest.mark.asyncio



async def stored_user_texts(server: ServerProcess, session_id: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        found = (await http.get(f"{server.url}/api/conversations/{session_id}", headers=ADMIN_HEADERS, timeout=30)).json()
    return [t["user_text"] for t in found["turns"]]


async def test_a_message_retried_with_its_client_id_is_answered_once(tmp_path: Path, trained_models: Path) -> None:
    server = ServerProcess(fresh_data_dir(tmp_path / "server", trained_models)).start()
    try:
        chat = await ChatClient.open(server.ws_url, language="en")
        ack, answer = await turn(chat, "where is my order 12345", "page1-1")
        assert "12345" in answer["text"]
        # The same message again on the same connection (the client missed the answer): same turn, same answer.
        again_ack, again = await turn(chat, "where is my order 12345", "page1-1")
        assert again_ack["turn_id"] == ack["turn_id"] and again_ack.get("repeated") is True
        assert again["text"] == answer["text"] and again.get("repeated") is True
        token, session_id = chat.session["token"], chat.session["session_id"]
        await chat.close()
        # After a reconnect (as after a fail-over): the stored answer, in clear, not a second turn.
        resumed = await ChatClient.open(server.ws_url, token=token)
        retried_ack, retried = await turn(resumed, "where is my order 12345", "page1-1")
        assert retried_ack["turn_id"] == ack["turn_id"] and retried["text"] == answer["text"] and retried.get("repeated") is True
        # A new client_id is a new message, answered with what the bot remembers.
        _, status = await turn(resumed, "please cancel it", "page1-2")
        assert status.get("repeated") is None and "12345" in status["text"]
        await resumed.close()
        texts = await stored_user_texts(server, session_id)
        assert texts == ["where is my order 12345", "please cancel it"]
    finally:
        server.stop()


async def test_redis_down_refuses_new_sessions_and_lets_a_live_one_finish(tmp_path: Path, trained_models: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {"VOICEBOT_COORDINATION__REDIS_URL": redis_server.url, "VOICEBOT_COORDINATION__TIMEOUT_S": "0.5"}
    server = ServerProcess(fresh_data_dir(tmp_path / "server", trained_models), extra_env=env).start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            ready = await http.get(f"{server.url}/ready")
            assert ready.status_code == 200 and ready.json()["coordination"] == {"ok": True, "backend": "redis", "error": None}
            live = await ChatClient.open(server.ws_url, language="en")
            spare_token = await session_token(server.ws_url)  # issued while Redis answered
            _, first = await turn(live, "where is my order 12345", "live-1")
            assert "12345" in first["text"]

            await live.send({"type": "message", "text": "please cancel it", "client_id": "live-2"})
            redis_server.stop()  # while that turn is in flight (or just after)
            ack = await live.expect("ack")
            answer = await live.expect("message")
            assert answer["turn_id"] == ack["turn_id"] and "12345" in answer["text"]
            _, after = await turn(live, "thanks", "live-3")  # the live conversation goes on
            assert after["text"]

            refused = await http.post(f"{server.url}/api/session-token", json={})
            assert refused.status_code == 503 and refused.json()["error"] == "coordination_unavailable"
            assert int(refused.headers["Retry-After"]) >= 1
            async with connect(f"{server.ws_url}?access_token={spare_token}") as ws:
                await ws.send('{"type": "start"}')
                frame = await asyncio.wait_for(ws.recv(), 30)
                assert '"coordination_unavailable"' in str(frame)
            not_ready = await http.get(f"{server.url}/ready")
            body = not_ready.json()
            assert not_ready.status_code == 503 and body["status"] == "not_ready"
            assert body["coordination"]["ok"] is False and body["storage"]["ok"] is True

            redis_server.start()  # back: new conversations again
            for _ in range(100):
                if (await http.get(f"{server.url}/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            fresh = await ChatClient.open(server.ws_url, language="en")
            _, hello = await turn(fresh, "hi", "fresh-1")
            assert hello["text"]
            await fresh.close()
            await live.close()
    finally:
        server.stop()
        redis_server.stop()
