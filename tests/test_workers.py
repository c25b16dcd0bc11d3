"""``voicebot serve --workers N``: refused with the reason where several processes would be unsafe
(SQLite, no Redis); with PostgreSQL and Redis, N processes answer on one port and stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
from cryptography.fernet import Fernet

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir
from tests.pg_server import PostgresServer, database_of
from tests.redis_server import RedisServer


def serve_workers(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voicebot", "serve", "--workers", "2", "--port", "0", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_several_workers_are_refused_with_sqlite_or_without_redis(tmp_path: Path) -> None:
    sqlite = serve_workers(tmp_path / "a", {})
    assert sqlite.returncode != 0
    assert "--workers 2 refused" in sqlite.stderr and "storage.backend is 'sqlite'" in sqlite.stderr, sqlite.stderr
    with_redis = serve_workers(tmp_path / "b", {"VOICEBOT_COORDINATION__REDIS_URL": "redis://127.0.0.1:1/0"})
    assert with_redis.returncode != 0 and "storage.backend is 'sqlite'" in with_redis.stderr
    postgres_alone = serve_workers(tmp_path / "c", {"VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": "postgresql://x@127.0.0.1:1/x"})
    assert postgres_alone.returncode != 0 and "coordination.redis_url is not set" in postgres_alone.stderr, postgres_alone.stderr
    assert "Traceback" not in sqlite.stderr + with_redis.stderr + postgres_alone.stderr
    assert not (tmp_path / "a" / "voicebot.db").exists()  # refused before anything was created


BURST = 200


async def ready_pid(url: str) -> int:
    """The pid of the worker that answers a new connection (its own client: nothing reused)."""
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{url}/ready")
        response.raise_for_status()
        return int(response.json()["pid"])


@pytest.mark.asyncio
async def test_two_workers_on_postgres_and_redis_serve_one_port(tmp_path: Path, trained_models: Path,
                                                                postgres_server: PostgresServer) -> None:
    database = postgres_server.create_database()
    redis_server = RedisServer(tmp_path / "redis").start()
    env = {"VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": database,
           "VOICEBOT_COORDINATION__REDIS_URL": redis_server.url, "VOICEBOT_AUTH__SECRET": secrets.token_urlsafe(40),
           "VOICEBOT_PRIVACY__ENCRYPTION_KEYS": json.dumps([Fernet.generate_key().decode()])}
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env=env, extra_args=["--workers", "2"])
    try:
        server.start(timeout=300)  # a supervisor and two workers starting on a loaded machine
        assert server.process is not None
        supervisor = psutil.Process(server.process.pid)
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < 2:  # a fresh connection each time: the kernel hands it to either worker
            try:
                response = httpx.get(f"{server.url}/ready", timeout=5)
            except httpx.HTTPError:
                continue
            assert time.monotonic() < deadline, f"only {pids} answered ready; last: {response.status_code} {response.text}"
            if response.status_code == 200:
                pids.add(response.json()["pid"])
        assert pids <= {child.pid for child in supervisor.children(recursive=True)}
        # A burst of new connections, as 200 chat sessions opening at once: each worker gets a fair
        # share from its own socket (measured 117/83; one socket shared by both gave 162/38: the
        # first worker to wake accepted most).
        burst = Counter(await asyncio.gather(*(ready_pid(server.url) for _ in range(BURST))))
        assert set(burst) == pids and min(burst.values()) >= BURST * 3 // 10, burst
        chats = [await ChatClient.open(server.ws_url, language="en") for _ in range(4)]
        for chat in chats:
            answer = await chat.say("where is my order 54321?")
            assert "54321" in answer["text"]
            await chat.close()
        server.stop()  # SIGTERM to the supervisor: every worker drains and exits
        assert server.process.returncode == 0
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    finally:
        server.stop()
        redis_server.stop()
        postgres_server.drop_database(database_of(database))


def test_a_port_another_server_listens_on_is_refused_even_with_reuse_port() -> None:
    """Per-worker sockets share their port with SO_REUSEPORT; a second deployment must not silently
    join them (and take half their connections) just because it sets the same option."""
    import socket

    from voicebot.config import ConfigError
    from voicebot.workers import Listener

    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            Listener("127.0.0.1", other.getsockname()[1])
    finally:
        other.close()
    free = Listener("127.0.0.1", 0)
    assert free.port > 0
    free.close()
