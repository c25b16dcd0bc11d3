"""Shared fixtures: a real voicebot server in a subprocess on 127.0.0.1, and a websocket client."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

# A real PostgreSQL for the storage tests: postgres_server (session), postgres_url (a fresh database), storage_backend (each backend).
pytest_plugins = ("tests.pg_server", "tests.storage_backends", "tests.voice_fixtures", "tests.browser_fixtures")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# The operator key every test server accepts: every scope, every tenant.
ADMIN_KEY = "test-admin-key-0123456789abcdef"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_KEYS_ENV = json.dumps([{"name": "tests", "key": ADMIN_KEY, "tenant": "*",
                              "scopes": ["transcripts:read", "feedback:write", "domain:manage", "data:erase", "sessions:issue", "metrics:read", "analytics:read"]}])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A `voicebot serve` process; stopped by its own pid, never by name."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)  # more `voicebot serve` options, e.g. ["--workers", "2"]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers of an operator API key (all scopes, all tenants) for the REST API."""
        return dict(ADMIN_HEADERS)

    def start(self, timeout: float = 90) -> ServerProcess:
        env = {**os.environ, "VOICEBOT_AUTH__API_KEYS": ADMIN_KEYS_ENV, **self.extra_env}
        self.log_path = self.data_dir / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicebot", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json().get("status") == "ok":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the demo NLU once per test run; servers copy it instead of retraining."""
    data_dir = tmp_path_factory.mktemp("models-seed")
    subprocess.run([sys.executable, "-m", "voicebot", "train", "--data-dir", str(data_dir)], check=True, capture_output=True)
    return data_dir / "models"


def fresh_data_dir(base: Path, trained_models: Path) -> Path:
    shutil.copytree(trained_models, base / "models")
    return base


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random T5 with a sentencepiece tokenizer trained on the demo domain's text."""
    from voicebot.pipelines.generation.random_model import build_random_seq2seq, demo_corpus
    from voicebot.resources import demo_domain_dir

    # The seed is one whose random weights answer different prompts differently (tests/test_generation.py
    # checks that batching keeps each output): a seed that makes every prompt decode to the same
    # repetition would make that check meaningless. Revisit when the demo corpus changes.
    return build_random_seq2seq(tmp_path_factory.mktemp("tiny-t5"), demo_corpus(demo_domain_dir()), seed=2)


@pytest.fixture(scope="session")
def tiny_mt5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from voicebot.pipelines.generation.random_model import build_random_seq2seq, demo_corpus
    from voicebot.resources import demo_domain_dir

    return build_random_seq2seq(tmp_path_factory.mktemp("tiny-mt5"), demo_corpus(demo_domain_dir()), architecture="mt5", seed=1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("server"), trained_models)
    proc = ServerProcess(data_dir).start()
    yield proc
    proc.stop()


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://", 1).rsplit("/ws", 1)[0]


async def session_token(ws_url: str, headers: dict[str, str] | None = None, **body: Any) -> str:
    """A session token from the server of ``ws_url`` (anonymous unless ``headers`` carry a key)."""
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{http_base(ws_url)}/api/session-token", json=body, headers=headers or {}, timeout=30)
    response.raise_for_status()
    return str(response.json()["token"])


async def authorized(ws_url: str) -> str:
    """``ws_url`` with a fresh session token, for tests that drive the websocket by hand."""
    return f"{ws_url}?access_token={await session_token(ws_url)}"


class ChatClient:
    """A real websocket client speaking the chat protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session: dict[str, Any] = {}

    @classmethod
    async def open(cls, url: str, *, access_token: str | None = None, **start: Any) -> ChatClient:
        """Connect like the chat page does: get a session token, then open the websocket with it."""
        token = access_token or await session_token(url)
        client = cls(await connect(f"{url}?access_token={token}", max_size=4 * 1024 * 1024))
        if start.get("token"):
            await client.send({"type": "resume", "token": start["token"]})
        else:
            await client.send({"type": "start", **start})
        client.session = await client.expect("session")
        return client

    async def send(self, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(payload, ensure_ascii=False))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        import asyncio

        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        while True:
            message = await self.recv(timeout)
            if message["type"] == kind:
                return message
            if message["type"] == "error" and kind != "error":
                raise AssertionError(f"expected {kind}, got error {message}")

    async def say(self, text: str) -> dict[str, Any]:
        """Send a message; return the final bot message with the chunks streamed before it."""
        await self.send({"type": "message", "text": text})
        chunks: list[str] = []
        chunk_languages: list[str] = []  # what a voice would speak each chunk in
        while True:
            message = await self.recv()
            if message["type"] == "chunk":
                chunks.append(message["text"])
                chunk_languages.append(message.get("language", ""))
            elif message["type"] == "message":
                message["chunks"], message["chunk_languages"] = chunks, chunk_languages
                return message
            elif message["type"] == "error":
                raise AssertionError(f"error reply to {text!r}: {message}")

    async def close(self) -> None:
        await self.ws.close()
