"""A WebRTC call across two workers on one real PostgreSQL and one real Redis.

A call's HTTP part is two self-contained requests: ``POST /api/session-token`` and ``POST
/webrtc/offer`` (the answer carries every ICE candidate of the worker that answered: no trickle
ICE, no follow-up request). Everything after it (audio, the "events" data channel with the
transcripts and the caller's hang-up) flows between the caller and that worker directly. So the
token may come from worker A and the offer go to worker B, as a balancer may send them; while the
call lives, its conversation is B's (a resume on A is refused with ``conversation_in_use``); after
the hang-up it is resumed on A with every turn of the call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_HEADERS, ChatClient, ServerProcess, fresh_data_dir, session_token
from tests.deployment_env import deployment_services
from tests.pg_server import PostgresServer
from tests.test_scale_out import resume_when_free
from tests.test_voice import VOICE_ENV, pause, speak, until_quiet
from tests.voice_budget import ComputeBudget
from voicebot.channels.webrtc.caller import Caller

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Workers:
    def __init__(self, a: ServerProcess, b: ServerProcess) -> None:
        self.a, self.b = a, b


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, postgres_server: PostgresServer,
            budget: ComputeBudget) -> Iterator[Workers]:
    folder = tmp_path_factory.mktemp("scale-out-call")
    with deployment_services(postgres_server, folder) as shared:
        env = {
            **shared,
            **VOICE_ENV,
        }
        a = ServerProcess(fresh_data_dir(folder / "a", trained_models), extra_env=env)
        b = ServerProcess(fresh_data_dir(folder / "b", trained_models), extra_env=env)
        try:
            a.start(timeout=budget.startup())
            b.start(timeout=budget.startup())
            yield Workers(a, b)
        finally:
            a.stop()
            b.stop()


class CallerViaTwoWorkers(Caller):
    """A caller whose session token request reaches ``token_url`` (worker A) and whose offer
    reaches its ``base_url`` (worker B): what a balancer choosing per request may do."""

    def __init__(self, token_url: str, offer_url: str) -> None:
        super().__init__(offer_url, "en", loopback_only=True)
        self.token_url = token_url

    async def _access_token(self, client: httpx.AsyncClient) -> str:
        response = await client.post(f"{self.token_url}/api/session-token", json={}, timeout=30)
        response.raise_for_status()
        return str(response.json()["token"])


async def active_sessions(server: ServerProcess) -> int:
    async with httpx.AsyncClient() as http:
        return int((await http.get(f"{server.url}/health", timeout=10)).json()["active_sessions"])


async def test_a_call_signalled_through_one_worker_and_served_by_another(workers: Workers, voices: Any, budget: ComputeBudget) -> None:
    caller = CallerViaTwoWorkers(workers.a.url, workers.b.url)
    await caller.connect()
    try:
        await caller.wait_for("session", timeout=budget.setup())
        assert await active_sessions(workers.b) == 1 and await active_sessions(workers.a) == 0  # the offer's worker serves the call
        question = await speak(voices, "Where is my order? The number is 5 4 3 2 1.", "en")
        await caller.say(np.concatenate([pause(0.3), question, pause(0.3)]))
        answer = (await caller.wait_for("bot_message", timeout=budget.turn(len(question) / 48_000)))[0]
        await until_quiet(caller, budget)
        assert answer["text"] and caller.recording.user_transcripts
        # While the call lives its conversation is B's: a chat resume on A gets the documented refusal.
        async with connect(f"{workers.a.ws_url}?access_token={await session_token(workers.a.ws_url)}") as ws:
            other = ChatClient(ws)
            await other.send({"type": "resume", "token": caller.session["token"]})
            refused = await other.expect("error")
            assert refused["code"] == "conversation_in_use" and refused["retry_after"] > 0
    finally:
        await caller.hang_up()  # on the data channel, straight to B
    deadline = time.monotonic() + budget.setup()
    while await active_sessions(workers.b):  # B ended the call on the caller's hang-up
        assert time.monotonic() < deadline, "the hang-up did not end the call on its worker"
        await asyncio.sleep(0.2)
    resumed, _ = await resume_when_free(workers.a, caller.session["token"])
    try:
        history = resumed.session["history"]
        assert len(history) == 1 and history[0]["bot"] == answer["text"]  # the call's turn, resumed on A
        async with httpx.AsyncClient() as http:
            stored = (await http.get(f"{workers.a.url}/api/conversations/{caller.session['session_id']}", headers=ADMIN_HEADERS,
                                     timeout=30)).json()
        assert stored["channel"] == "webrtc" and len(stored["turns"]) == 1
        assert stored["turns"][0]["trace"]["voice"]["asr"]["model"].startswith("faster-whisper")
    finally:
        await resumed.close()
