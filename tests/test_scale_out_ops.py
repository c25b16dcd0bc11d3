"""Operations across workers on one real PostgreSQL and one real Redis: the retention sweep of one
worker keeps a conversation live on another, and ``voicebot control shutdown`` drains and stops
every worker (a plain ``voicebot serve`` and a ``serve --workers 2`` supervisor alike)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.chat_turns import turn
from tests.conftest import ADMIN_HEADERS, ChatClient, ServerProcess, fresh_data_dir
from tests.deployment_env import deployment_services
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

RETENTION_S = 3.0  # privacy.retention_days of this deployment, in seconds: a conversation idle this long is due


class Deployment:
    def __init__(self, env: dict[str, str], a: ServerProcess, b: ServerProcess, pool: ServerProcess) -> None:
        self.env, self.a, self.b, self.pool = env, a, b, pool


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, postgres_server: PostgresServer) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("scale-out-ops")
    with deployment_services(postgres_server, folder) as shared:
        env = {
            **shared,
            "VOICEBOT_PRIVACY__RETENTION_DAYS": str(RETENTION_S / 86400),
        }
        a = ServerProcess(fresh_data_dir(folder / "a", trained_models), extra_env=env)
        b = ServerProcess(fresh_data_dir(folder / "b", trained_models), extra_env=env)
        pool = ServerProcess(fresh_data_dir(folder / "pool", trained_models), extra_env=env, extra_args=["--workers", "2"])
        try:
            a.start()
            b.start()
            pool.start(timeout=300)
            yield Deployment(env, a, b, pool)
        finally:
            for server in (a, b, pool):
                server.stop()


async def active_sessions(server: ServerProcess) -> int:
    async with httpx.AsyncClient() as http:
        return int((await http.get(f"{server.url}/health", timeout=10)).json()["active_sessions"])


async def conversation_status(server: ServerProcess, session_id: str) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{server.url}/api/conversations/{session_id}", headers=ADMIN_HEADERS, timeout=30)).status_code


async def test_retention_on_one_worker_keeps_the_conversation_live_on_another(deployment: Deployment) -> None:
    live = await ChatClient.open(deployment.b.ws_url, language="en")
    await turn(live, "where is my order 54321?", "live-1")
    idle = await ChatClient.open(deployment.a.ws_url, language="en")
    await turn(idle, "what is your return policy?", "idle-1")
    idle_id = idle.session["session_id"]
    await idle.close()
    while await active_sessions(deployment.a):  # its end is stored (that is the last update of the conversation)
        await asyncio.sleep(0.1)
    await asyncio.sleep(RETENTION_S + 1)  # both conversations are now older than the retention period
    async with httpx.AsyncClient() as http:
        run = await http.post(f"{deployment.a.url}/api/retention/run", headers=ADMIN_HEADERS, timeout=60)
    assert run.status_code == 200 and run.json()["deleted"] == 1, run.text
    assert await conversation_status(deployment.a, idle_id) == 404  # the idle one is gone
    assert await conversation_status(deployment.a, live.session["session_id"]) == 200  # the one live on B is kept
    _, answer = await turn(live, "anna.schmidt@example.com", "live-2")  # and keeps working, with its state
    assert "54321" in answer["text"], answer
    await live.close()


def control(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voicebot", "control", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


async def test_control_shutdown_drains_and_stops_every_worker(deployment: Deployment) -> None:
    assert deployment.pool.process is not None
    pool_workers = [child.pid for child in psutil.Process(deployment.pool.process.pid).children()
                    if "spawn_main" in " ".join(child.cmdline())]  # not multiprocessing's resource tracker
    assert len(pool_workers) == 2
    chats = {name: await ChatClient.open(server.ws_url, language="en")
             for name, server in (("a", deployment.a), ("b", deployment.b), ("pool", deployment.pool))}
    for name, chat in chats.items():
        await turn(chat, "hello", f"{name}-before")
    for name, chat in chats.items():  # a turn in flight on each worker when the message comes
        await chat.send({"type": "message", "text": "what is your return policy?", "client_id": f"{name}-during"})
        await chat.expect("ack")
    sent = control(deployment.env, "shutdown")
    assert sent.returncode == 0, sent.stderr
    assert "shutdown sent to 4 worker(s)" in sent.stdout, sent.stdout  # a, b and the pool's two
    for name, chat in chats.items():
        frames = []
        while not frames or frames[-1]["type"] != "ended":
            frames.append(await chat.recv(timeout=60))
        assert len([f for f in frames if f["type"] == "message"]) == 1, (name, frames)  # the turn in flight was answered
        assert frames[-1]["reason"] == "server_restart" and frames[-1]["resume"] is True, (name, frames[-1])
    for server in (deployment.a, deployment.b, deployment.pool):
        assert server.process is not None
        assert server.process.wait(timeout=60) == 0, server.log_path.read_text() if server.log_path else ""
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pool_workers)
    log = deployment.pool.log_path.read_text() if deployment.pool.log_path else ""
    assert "starting a new one" not in log and "Traceback" not in log, log  # the supervisor replaced none
    nobody = control(deployment.env, "shutdown")
    assert nobody.returncode == 1 and "no worker listens" in nobody.stdout, nobody.stdout + nobody.stderr
