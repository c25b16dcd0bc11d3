"""Nothing of a session stays in the server's registries once it has ended, however it ended.

The load test (tests/test_load.py) sees a per-session leak only as RSS after 1,000 sessions; this
checks the registries themselves, in a server run in this process with real websocket clients:
sessions ended politely, by dropping the socket after the answer, and while it is being made.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import uvicorn
from websockets.asyncio.client import connect

from tests.conftest import authorized, free_port, fresh_data_dir
from voicebot.config import load_settings
from voicebot.server import create_app

SESSIONS = 24


async def _one_session(ws_url: str, how: int) -> None:
    async with connect(await authorized(ws_url)) as ws:
        await ws.send(json.dumps({"type": "start", "language": "en"}))
        while json.loads(await ws.recv())["type"] != "session":
            pass
        await ws.send(json.dumps({"type": "message", "text": "where is my order?"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "ack" and how == 2:
                return  # dropped while the answer is being made
            if frame["type"] == "message":
                break
        if how == 0:
            await ws.send(json.dumps({"type": "end"}))
            while json.loads(await ws.recv())["type"] != "ended":
                pass


async def test_ended_sessions_leave_no_entry_in_any_registry(tmp_path: Path, trained_models: Path) -> None:
    settings = load_settings(None, storage__data_dir=fresh_data_dir(tmp_path, trained_models), limits__sessions_per_client=SESSIONS)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.05)
        ws_url = f"ws://127.0.0.1:{port}/ws"
        await asyncio.gather(*(_one_session(ws_url, index % 3) for index in range(SESSIONS)))
        runtime = app.state.runtime
        chat = runtime.channels["websocket"]
        rate = runtime.message_rate

        def leftovers() -> dict[str, int]:
            return {"sessions": len(runtime.sessions), "connections": len(chat.connections), "by_session": len(chat._by_session),
                    "slots": runtime.session_limiter.active, "slot_clients": runtime.session_limiter.clients,
                    "handoff_routes": len(runtime.agents._routes), "desk_entries": len(runtime.agents.entries),
                    "rate_keys": rate.keys}

        # Ending is asynchronous (a dropped socket's turn is finished and stored first) and the
        # rate keys are forgotten once their window has passed: wait for that, then look.
        for _ in range(int((rate.window_s + 30) / 0.1)):
            if not any(leftovers().values()):
                break
            await asyncio.sleep(0.1)
        assert leftovers() == dict.fromkeys(leftovers(), 0)
    finally:
        server.should_exit = True
        await serving
