"""Limits refuse clearly and never crash or queue: message rate, sessions per address, sessions of
the server, a client that stops reading; each limit set by configuration, slots never leak."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.conftest import ChatClient, ServerProcess, authorized, fresh_data_dir
from voicebot.access.limits import LimitExceeded, MessageRateLimiter, SessionLimiter
from voicebot.config import load_settings
from voicebot.core.runtime import BotRuntime, ResumeError

# --------------------------------------------------------------------------- the limiters alone


def test_session_limiter_counts_per_address_and_overall_and_releases_once() -> None:
    limiter = SessionLimiter(max_sessions=3, per_client=2)
    first, second = limiter.acquire("10.0.0.1"), limiter.acquire("10.0.0.1")
    with pytest.raises(LimitExceeded) as refused:
        limiter.acquire("10.0.0.1")
    assert refused.value.code == "too_many_sessions" and "2 conversations" in refused.value.message
    in_process = limiter.acquire(None)  # an in-process channel: counted in the total only
    with pytest.raises(LimitExceeded) as busy:
        limiter.acquire("10.0.0.2")
    assert busy.value.code == "server_busy"
    first.release()
    first.release()  # twice is harmless: every exit path may release
    assert limiter.active == 2 and limiter.count("10.0.0.1") == 1
    limiter.acquire("10.0.0.2").release()
    second.release()
    in_process.release()
    assert limiter.active == 0 and limiter.clients == 0


@pytest.mark.parametrize(("per_second", "burst", "window_s", "amount"),
                         [(3.0, 10, 3, 10), (100.0, 10, 1, 100), (0.5, 10, 20, 10), (2.0, 4, 2, 4), (0.1, 1, 10, 1)])
def test_message_rate_window_keeps_the_burst_and_the_rate(per_second: float, burst: int, window_s: int, amount: int) -> None:
    rate = MessageRateLimiter(per_second, burst)
    assert (rate.window_s, rate.amount) == (window_s, amount)


def test_message_rate_refuses_beyond_the_burst_and_lets_in_after_retry_after() -> None:
    rate = MessageRateLimiter(per_second=5, burst=5)  # 5 in any 1 s
    for _ in range(5):
        rate.hit("session-a")
    with pytest.raises(LimitExceeded) as refused:
        rate.hit("session-a")
    assert refused.value.code == "rate_limited" and 0 < refused.value.retry_after <= 1.0  # type: ignore[operator]
    rate.hit("session-b")  # other sessions have their own budget
    time.sleep(refused.value.retry_after)  # type: ignore[arg-type]
    rate.hit("session-a")


async def test_message_rate_forgets_ended_sessions_once_their_window_has_passed() -> None:
    rate = MessageRateLimiter(per_second=10, burst=5)  # a 1 s window
    for session in range(100):
        rate.hit(f"ended-{session}")
        rate.forget(f"ended-{session}")
    rate.hit("resumed")
    rate.forget("resumed")
    await asyncio.sleep(0.5)
    rate.hit("resumed")  # used again within the window: kept
    await asyncio.sleep(1.0)
    assert rate.keys == 1


# --------------------------------------------------------------------------- the runtime's accounting


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def runtime(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> AsyncIterator[BotRuntime]:
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("limits-runtime"), trained_models)
    settings = load_settings(None, storage__data_dir=data_dir, limits__sessions_per_client=2, limits__max_sessions=3)
    bot = BotRuntime(settings)
    await bot.start()
    yield bot
    await bot.close()


async def _conversations(bot: BotRuntime) -> int:
    total, _ = await bot.storage.list_conversations(1, 0)
    return int(total)


@pytest.mark.asyncio(loop_scope="module")
async def test_refused_open_creates_nothing_and_close_frees_the_slot(runtime: BotRuntime) -> None:
    a1 = await runtime.open_session("test", client="10.0.0.1")
    a2 = await runtime.open_session("test", client="10.0.0.1")
    stored = await _conversations(runtime)
    with pytest.raises(LimitExceeded, match="at most 2 conversations") as refused:
        await runtime.open_session("test", client="10.0.0.1")
    assert refused.value.code == "too_many_sessions"
    b1 = await runtime.open_session("test", client="10.0.0.2")  # another address is not affected
    with pytest.raises(LimitExceeded) as busy:
        await runtime.open_session("test", client="10.0.0.3")
    assert busy.value.code == "server_busy"
    assert await _conversations(runtime) == stored + 1  # the refused opens stored nothing
    await a1.close()
    await a1.close()
    a3 = await runtime.open_session("test", client="10.0.0.1")  # the closed session's slot is free again
    for handle in (a2, a3, b1):
        await handle.close()
    assert runtime.session_limiter.active == 0 and runtime.session_limiter.clients == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_a_failing_open_releases_its_slot(runtime: BotRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(runtime.storage, "create_conversation", broken)
    for _ in range(5):  # more attempts than there are slots: each failure gave its slot back
        with pytest.raises(OSError, match="disk full"):
            await runtime.open_session("test", client="10.0.0.1")
    monkeypatch.undo()
    for _ in range(5):
        with pytest.raises(ResumeError):
            await runtime.open_session("test", client="10.0.0.1", resume_token="no-such-token-000")
    assert runtime.session_limiter.active == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_resuming_a_live_session_at_the_limit_replaces_it(runtime: BotRuntime) -> None:
    first = await runtime.open_session("test", client="10.0.0.1")
    other = await runtime.open_session("test", client="10.0.0.1")
    resumed = await runtime.open_session("test", client="10.0.0.1", resume_token=first.token)  # a reconnect
    assert resumed.resumed and resumed.id == first.id and runtime.session_limiter.count("10.0.0.1") == 2
    await resumed.close()
    await other.close()
    assert runtime.session_limiter.active == 0


@pytest.mark.asyncio(loop_scope="module")
async def test_calls_share_the_session_limits_with_chat(runtime: BotRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("aiortc")
    from aiortc import RTCPeerConnection
    from starlette.applications import Starlette

    from voicebot.channels.webrtc.channel import WebRTCChannel, use_loopback_candidates_only

    use_loopback_candidates_only()
    caller = RTCPeerConnection()
    caller.addTransceiver("audio", direction="sendrecv")
    await caller.setLocalDescription(await caller.createOffer())
    token, _ = runtime.access.tokens.issue(runtime.access.default_tenant())
    offer = {"sdp": caller.localDescription.sdp, "type": "offer", "access_token": token}
    monkeypatch.setattr(runtime, "voice", object())  # refused before any audio would flow
    app = Starlette(routes=WebRTCChannel(runtime).routes())

    async def post_offer(address: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            return await client.post("/webrtc/offer", json=offer)

    chats = [await runtime.open_session("websocket", client="10.0.0.9") for _ in range(2)]
    refused = await post_offer("10.0.0.9")
    assert refused.status_code == 429 and refused.json()["error"] == "too_many_sessions"
    chats.append(await runtime.open_session("websocket", client="10.0.0.10"))
    busy = await post_offer("10.0.0.11")
    assert busy.status_code == 503 and busy.json()["error"] == "server_busy"
    for chat in chats:
        await chat.close()
    await caller.close()
    assert runtime.session_limiter.active == 0


# --------------------------------------------------------------------------- a real server

LIMITS_ENV = {
    "VOICEBOT_LIMITS__MESSAGES_PER_SECOND": "2",
    "VOICEBOT_LIMITS__MESSAGE_BURST": "4",  # 4 messages in any 2 s
    "VOICEBOT_LIMITS__SESSIONS_PER_CLIENT": "3",
    "VOICEBOT_LIMITS__MAX_SESSIONS": "5",
    "VOICEBOT_LIMITS__REFUSALS_BEFORE_CLOSE": "5",
    "VOICEBOT_LIMITS__SEND_TIMEOUT_S": "2",
    "VOICEBOT_LIMITS__SESSION_TOKENS_PER_MINUTE": "1000",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("limited"), trained_models), extra_env=LIMITS_ENV).start()
    yield proc
    proc.stop()


async def _health(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{server.url}/health", timeout=10)).json()


async def _wait_idle(server: ServerProcess, at_most: int = 0, timeout: float = 30) -> None:
    """Sessions end a little after their socket (the pipeline drains first): wait for that."""
    deadline = time.monotonic() + timeout
    while (await _health(server))["active_sessions"] > at_most and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert (await _health(server))["active_sessions"] <= at_most


async def _conversation(server: ServerProcess, conversation_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{server.url}/api/conversations/{conversation_id}", headers=server.admin_headers, timeout=10)
    response.raise_for_status()
    return response.json()


async def _open_from(server: ServerProcess, address: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Connect (as ``address`` via X-Forwarded-For, which uvicorn trusts from 127.0.0.1 only), send
    'start' and return the socket and the first answer (``session`` or an ``error``)."""
    headers = {"X-Forwarded-For": address} if address else None
    ws = await connect(await authorized(server.ws_url), additional_headers=headers, max_size=4 * 1024 * 1024)
    await ws.send(json.dumps({"type": "start", "language": "en"}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame["type"] in ("session", "error"):
            return ws, frame


async def _next(ws: Any, *kinds: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame["type"] in kinds:
            return frame


async def _close_code(ws: Any) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    return ws.close_code


async def test_rate_limit_refuses_with_retry_after_and_the_session_goes_on(limited: ServerProcess) -> None:
    await _wait_idle(limited)
    chat = await ChatClient.open(limited.ws_url, language="en")
    other = await ChatClient.open(limited.ws_url, language="en")
    for _ in range(4 + 1):  # the burst, and one more
        await chat.send({"type": "message", "text": "where is my order?"})
    refusals: list[dict[str, Any]] = []
    answered = 0
    while answered < 4 or not refusals:  # the four accepted messages are all answered
        frame = await _next(chat.ws, "message", "error")
        if frame["type"] == "error":
            refusals.append(frame)
        else:
            answered += 1
    [refused] = refusals
    assert refused["code"] == "rate_limited" and 0 < refused["retry_after"] <= 2 and "at most 4 in 2 s" in refused["message"]
    assert "order" in (await other.say("where is my order?"))["text"].lower()  # other sessions are not affected
    await chat.send({"type": "ping"})
    await _next(chat.ws, "pong")  # the connection stays open
    await asyncio.sleep(refused["retry_after"])
    assert "12345" in (await chat.say("12345"))["text"]  # waiting as told is enough
    session_id = chat.session["session_id"]
    await chat.close()
    await other.close()
    await _wait_idle(limited)
    assert len((await _conversation(limited, session_id))["turns"]) == 5  # refused messages are not turns


async def test_a_client_ignoring_rate_limits_is_closed_with_1008(limited: ServerProcess) -> None:
    await _wait_idle(limited)
    chat = await ChatClient.open(limited.ws_url, language="en")
    for _ in range(4 + 5):  # the burst, then refusals_before_close refusals in a row
        await chat.send({"type": "message", "text": "hello"})
    assert await _close_code(chat.ws) == 1008
    await _wait_idle(limited)
    stored = await _conversation(limited, chat.session["session_id"])
    assert len(stored["turns"]) == 4 and stored["status"] == "ended"  # what was accepted is stored


async def test_sessions_per_address_and_per_server_are_refused_with_1013(limited: ServerProcess) -> None:
    await _wait_idle(limited)
    local = [await _open_from(limited) for _ in range(3)]
    assert all(frame["type"] == "session" for _, frame in local)
    ws, refused = await _open_from(limited)
    assert refused["code"] == "too_many_sessions" and "at most 3" in refused["message"]
    assert await _close_code(ws) == 1013
    remote = [await _open_from(limited, "203.0.113.7") for _ in range(2)]  # another address: admitted
    assert all(frame["type"] == "session" for _, frame in remote)
    ws, busy = await _open_from(limited, "203.0.113.8")  # 5 open: the server's limit
    assert busy["code"] == "server_busy" and await _close_code(ws) == 1013
    # Refusals did not disturb the sessions already open.
    ws0 = local[0][0]
    await ws0.send(json.dumps({"type": "message", "text": "where is my order?"}))
    assert "order" in (await _next(ws0, "message"))["text"].lower()
    await ws0.close()
    await _wait_idle(limited, at_most=4)
    ws, frame = await _open_from(limited)  # the closed session's slot is free again
    assert frame["type"] == "session"
    for socket_ in [ws, *(w for w, _ in local[1:]), *(w for w, _ in remote)]:
        await socket_.close()
    await _wait_idle(limited)


class StalledClient:
    """A websocket client on a raw socket that, after its session starts, never reads again: the
    server's sends fill the socket buffers and then wait. Its receive buffer is made small."""

    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((uri.host, uri.port))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self._read_until(lambda event: isinstance(event, Response))

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def _read_until(self, done: Any) -> Any:
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if done(event):
                    return event

    def send(self, payload: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(payload).encode())
        self._flush()

    def start(self) -> dict[str, Any]:
        self.send({"type": "start", "language": "en"})
        frame = self._read_until(lambda e: isinstance(e, Frame) and e.opcode == Opcode.TEXT and json.loads(e.data)["type"] == "session")
        return json.loads(frame.data)

    def _frame(self, text: bytes) -> bytes:
        self.protocol.send_text(text)
        return b"".join(self.protocol.data_to_send())  # masked with one key: the bytes can be sent again

    def flood_until_the_server_stops_reading(self, timeout: float = 120) -> None:
        """Send small frames that each make the server answer (an error frame eight times their
        size), enough to fill every socket buffer on the way back; then large frames that need no
        answer until the server no longer takes any: it is blocked sending to us (or has already
        dropped us)."""
        self.sock.setblocking(False)
        answered = self._frame(b'{"type": "dance"}') * 40_000  # ~7 MB of error frames to send back
        silent = self._frame(b'{"type": "typing"}' + b" " * 60_000)
        pending = answered
        deadline = time.monotonic() + timeout
        stuck_since: float | None = None
        while time.monotonic() < deadline:
            try:
                written = self.sock.send(pending)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # reset: the server has already dropped us
            pending = pending[written:] or silent
            if written:
                stuck_since = None
            elif stuck_since is None:
                stuck_since = time.monotonic()
            elif time.monotonic() - stuck_since > 1.0:
                return
            else:
                time.sleep(0.01)
        raise AssertionError(f"the server still reads after {timeout:g} s of flooding: its output is not bounded")

    def dropped(self, timeout: float = 60) -> bool:
        """True once the server has closed or reset the TCP connection. Reading would open the
        window and let a server that is not yet dropping us go on, so only the TCP state is looked
        at (Linux TCP_INFO: its first byte is the state, 1 = established)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 1:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_stops_reading_is_dropped_and_its_turns_are_stored(limited: ServerProcess) -> None:
    await _wait_idle(limited)
    server = psutil.Process(limited.process.pid)  # type: ignore[union-attr]
    rss_before = server.memory_info().rss
    slow = await asyncio.to_thread(StalledClient, await authorized(limited.ws_url))
    try:
        session = await asyncio.to_thread(slow.start)
        for text in ("where is my order?", "12345"):  # answered while the client no longer reads
            await asyncio.to_thread(slow.send, {"type": "message", "text": text})
        await asyncio.to_thread(slow.flood_until_the_server_stops_reading)
        # The server is stuck on this client only: another conversation goes on meanwhile.
        other = await ChatClient.open(limited.ws_url, language="en")
        assert "order" in (await other.say("where is my order?"))["text"].lower()
        await other.close()
        assert await asyncio.to_thread(slow.dropped)
    finally:
        slow.close()
    await _wait_idle(limited)
    stored = await _conversation(limited, session["session_id"])
    assert len(stored["turns"]) == 2 and stored["status"] == "ended"
    assert server.memory_info().rss - rss_before < 64 * 2**20  # what it did not read was not kept
    assert "stopped reading" in limited.log_path.read_text()  # type: ignore[union-attr]


def test_limits_are_validated_at_start_with_the_setting_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicebot", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        env={**os.environ, "VOICEBOT_LIMITS__MAX_SESSIONS": "0"}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "limits.max_sessions" in result.stderr and "Traceback" not in result.stderr


async def test_a_connection_that_never_starts_a_session_is_closed(tmp_path: Path, trained_models: Path) -> None:
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env={"VOICEBOT_LIMITS__START_TIMEOUT_S": "1"}).start()
    try:
        async with connect(await authorized(server.ws_url)) as idle:
            refusal = json.loads(await asyncio.wait_for(idle.recv(), 10))
            assert refusal["type"] == "error" and refusal["code"] == "no_session"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(idle.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # A client that starts in time is not affected.
        chat = await ChatClient.open(server.ws_url, language="en")
        await asyncio.sleep(1.5)
        assert (await chat.say("What is your return policy?"))["trace"]["knowledge"]["used"] == "return_policy"
        await chat.close()
    finally:
        server.stop()
