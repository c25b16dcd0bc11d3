"""Property-based fuzzing of the websocket chat protocol against a real server process.

Hypothesis throws arbitrary frames at ``/ws``: random JSON values, the known message types with
wrong field types, huge strings, binary frames, invalid UTF-8 in text frames, JSON nested deeper
than any parser's recursion limit. Whatever arrives, the server must answer with frames the
protocol documents (an ``error`` with a documented code, or a normal answer), close the socket
only where the protocol says so (1009 too big, 1007 invalid UTF-8, 1000 after ``end``), never log
a traceback, and afterwards the same connection (or a new one where it was closed) still gets a
normal answer and ``/health`` stays ok.

The server is this module's own (not the shared one) so its log holds only what these frames did,
and its rate limits are raised: the fuzzer sends far faster than a person types.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerProcess, authorized, fresh_data_dir

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
MAX_FRAME_BYTES = 1_048_576  # server.max_frame_bytes default
SERVER_TYPES = {"session", "ack", "typing", "chunk", "message", "cancelled", "feedback_saved", "error", "ended", "pong"}
FIELDS = {
    "start": ["language", "user_id"], "resume": ["token"], "message": ["text", "client_id"], "cancel": ["turn_id"],
    "feedback": ["turn_id", "rating", "comment"], "typing": [], "end": [], "ping": [],
}
FUZZ_ENV = {
    # The fuzzer is a very fast typist: limits meant for people would answer most frames with
    # rate_limited and hide everything else.
    "VOICEBOT_LIMITS__MESSAGES_PER_SECOND": "100000",
    "VOICEBOT_LIMITS__MESSAGE_BURST": "100000",
    "VOICEBOT_LIMITS__SESSIONS_PER_CLIENT": "1000",
    "VOICEBOT_LIMITS__SESSION_TOKENS_PER_MINUTE": "100000",
}


def documented_error_codes() -> set[str]:
    """Error codes as docs/protocol.md lists them, so a new undocumented code fails here."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("Error codes:"):].split("\n\n", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", section))


# -- strategies ---------------------------------------------------------------------------------

json_leaves = st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**80) | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12
)


@st.composite
def known_type_with_odd_fields(draw: st.DrawFn) -> str:
    """A known message type whose fields hold any JSON value, plus sometimes an unknown field."""
    kind = draw(st.sampled_from(sorted(FIELDS)))
    names = FIELDS[kind] + ["extra"]
    message: dict[str, Any] = {"type": kind}
    for name in names:
        if draw(st.booleans()):
            message[name] = draw(json_values)
    return json.dumps(message, ensure_ascii=draw(st.booleans()))


@st.composite
def plausible_messages(draw: st.DrawFn) -> str:
    """Well-typed frames with odd values: weird languages, tokens, ratings, unicode, NULs."""
    kind = draw(st.sampled_from(sorted(FIELDS)))
    text = st.text(max_size=300)
    values: dict[str, st.SearchStrategy[Any]] = {
        "language": st.sampled_from(["en", "de", "zh-CN", "zh-tw", "xx", "", "EN_us", "es-419", "und", "x" * 35]) | st.text(max_size=35),
        "user_id": st.text(max_size=128), "token": st.text(min_size=8, max_size=256), "text": text,
        "client_id": st.text(max_size=64), "turn_id": st.text(max_size=64),
        "rating": st.integers(min_value=-3, max_value=7) | st.integers(), "comment": st.text(max_size=2100),
    }
    message: dict[str, Any] = {"type": kind}
    for name in FIELDS[kind]:
        if draw(st.booleans()):
            message[name] = draw(values[name])
    return json.dumps(message, ensure_ascii=draw(st.booleans()))


def _huge(size: int, wrapped: bool) -> str:
    return json.dumps({"type": "message", "text": "x" * size}) if wrapped else "x" * size


huge_frames = st.builds(
    _huge, st.sampled_from([3999, 4000, 4001, 100_000, MAX_FRAME_BYTES - 64, MAX_FRAME_BYTES + 1, 2 * MAX_FRAME_BYTES]), st.booleans()
)


def _deep(depth: int, shape: str) -> str:
    if shape == "list":
        return "[" * depth + "]" * depth
    if shape == "object":
        return '{"a":' * depth + "1" + "}" * depth
    inner = "[" * depth + "]" * depth
    return '{"type": "message", "text": "hi", "client_id": ' + inner + "}"


deep_frames = st.builds(_deep, st.sampled_from([64, 199, 200, 201, 1000, 100_000]), st.sampled_from(["list", "object", "field"]))
raw_escapes = st.sampled_from([
    '{"type": "message", "text": "\\ud800 lone surrogate"}', '{"type": "message", "text": "\\udc00"}',
    '{"type": "message", "text": "ok", "client_id": "\\ud83d"}', '{"type": "message", "text": "\\u0000"}',
    '{"type": "message", "text": "a\\u0000b"}', '{"type": "message", "text": NaN}', '{"type": "feedback", "rating": 1e400}',
    '{"type": "feedback", "rating": 1.0}', '{"type": "feedback", "rating": true}', '{"type": "message", "text": "hi"} trailing',
    '{"type": "message", "type": "ping"}', '{"type": "message", "text": "hi", "text": 5}', "\ufeff" + '{"type": "ping"}',
    "", " ", "null", "0", "{}", '{"type": null}', '{"type": ["message"]}', '{"TYPE": "ping"}', '{"type": "PING"}',
])

text_frames = (
    json_values.map(json.dumps) | known_type_with_odd_fields() | plausible_messages() | huge_frames | deep_frames | raw_escapes
    | st.text(max_size=200)
)


@dataclass(frozen=True)
class Frame:
    """One frame to send: text, binary, or bytes sent as a text frame (possibly invalid UTF-8)."""

    payload: str | bytes
    kind: str = "text"  # text | binary | raw_text

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 200 else f"{self.payload[:100]!r}...({len(self.payload)} long)"
        return f"Frame({self.kind}, {shown!r})"


frames = (
    text_frames.map(Frame)
    | st.binary(max_size=2000).map(lambda b: Frame(b, "binary"))
    | st.binary(min_size=1, max_size=200).map(lambda b: Frame(b, "raw_text"))
    | st.sampled_from([b"\xff\xfe", b"\xc3\x28", b'{"type": "ping", "x": "\xed\xa0\x80"}', b"\xf4\x90\x80\x80"]).map(lambda b: Frame(b, "raw_text"))
)


# -- the harness ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    received: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


class Fuzzer:
    """Drives one long-lived chat connection (reopened when the protocol closes it) from a sync
    test through its own event loop, so hypothesis examples can share it."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.ws: ClientConnection | None = None
        self.log_offset = 0
        self.codes = documented_error_codes()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def connect(self) -> ClientConnection:
        return await connect(await authorized(self.server.ws_url), max_size=None, open_timeout=30)

    async def started(self) -> ClientConnection:
        if self.ws is None:
            ws = await self.connect()
            await ws.send(json.dumps({"type": "start", "language": "en"}))
            assert (await self.recv_type(ws, "session"))["type"] == "session"
            self.ws = ws
        return self.ws

    @staticmethod
    async def recv(ws: ClientConnection, timeout: float = 30) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(ws.recv(), timeout))

    async def recv_type(self, ws: ClientConnection, kind: str) -> dict[str, Any]:
        while True:
            message = await self.recv(ws)
            self.check_frame(message)
            if message["type"] == kind:
                return message

    def check_frame(self, message: dict[str, Any]) -> None:
        assert message.get("type") in SERVER_TYPES, message
        if message["type"] == "error":
            assert message.get("code") in self.codes, f"undocumented error code: {message}"
            assert isinstance(message.get("message"), str) and message["message"], message

    async def send_and_settle(self, ws: ClientConnection, frame: Frame) -> Outcome:
        """Send the frame, then a ping: everything the server says before the pong is its answer."""
        outcome = Outcome()
        try:
            if frame.kind == "text":
                await ws.send(frame.payload)
            elif frame.kind == "binary":
                await ws.send(bytes(frame.payload))
            else:
                await ws.send(bytes(frame.payload), text=True)
            await ws.send(json.dumps({"type": "ping"}))
            while True:
                message = await self.recv(ws)
                self.check_frame(message)
                outcome.received.append(message)
                if message["type"] == "pong":
                    break
        except ConnectionClosed as closed:
            outcome.close_code = closed.rcvd.code if closed.rcvd is not None else 1006
        return outcome

    async def normal_turn(self, ws: ClientConnection) -> dict[str, Any]:
        """A real message still gets a real answer (earlier fuzz turns may still be answering)."""
        await ws.send(json.dumps({"type": "message", "text": "where is my order 12345"}))
        turn_id = None
        while True:
            message = await self.recv(ws)
            self.check_frame(message)
            if message["type"] == "ack" and turn_id is None:
                turn_id = message["turn_id"]
            elif message.get("turn_id") == turn_id and turn_id is not None:
                assert message["type"] != "error", message
                if message["type"] == "message":
                    return message
            elif message["type"] == "error" and turn_id is None and message.get("turn_id") is None:
                raise AssertionError(f"the normal message was refused: {message}")

    def new_log(self) -> str:
        assert self.server.log_path is not None
        with self.server.log_path.open("rb") as log:
            log.seek(self.log_offset)
            data = log.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")


def allowed_close(frame: Frame, outcome: Outcome) -> bool:
    """The only ways the protocol lets the server close a chat socket."""
    size = len(frame.payload.encode("utf-8") if isinstance(frame.payload, str) else frame.payload)
    if outcome.close_code == 1009:
        return size > MAX_FRAME_BYTES
    if outcome.close_code == 1007:  # invalid UTF-8 in a text frame
        if frame.kind != "raw_text":
            return False
        try:
            bytes(frame.payload).decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False
    if outcome.close_code == 1000:
        return any(m["type"] == "ended" for m in outcome.received)
    return False


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("fuzz-ws"), trained_models), extra_env=FUZZ_ENV).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzzer(fuzz_server: ServerProcess) -> Iterator[Fuzzer]:
    fuzzer = Fuzzer(fuzz_server)
    yield fuzzer
    if fuzzer.ws is not None:
        fuzzer.run(fuzzer.ws.close())
    fuzzer.loop.close()


def _assert_healthy(fuzzer: Fuzzer) -> None:
    server = fuzzer.server
    assert server.process is not None and server.process.poll() is None, "the server process died"
    assert httpx.get(f"{server.url}/health", timeout=30).json()["status"] == "ok"
    log = fuzzer.new_log()
    # uvicorn closes a text frame with invalid UTF-8 with 1007 as it should, but logs it with a
    # traceback (logger.exception); that one is expected, any other traceback is a crash.
    expected = log.count("Invalid UTF-8 sequence received from client.")
    assert log.count("Traceback") == expected and log.count("UnicodeDecodeError") >= expected, log[-4000:]
    assert "Exception in ASGI application" not in log, log[-4000:]


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(frame=frames, fresh=st.booleans())
def test_any_frame_gets_an_error_or_an_answer_and_the_connection_goes_on(fuzzer: Fuzzer, frame: Frame, fresh: bool) -> None:
    async def example() -> None:
        if fresh:  # a frame before any start/resume, on a connection of its own
            ws = await fuzzer.connect()
            try:
                outcome = await fuzzer.send_and_settle(ws, frame)
                assert outcome.close_code is None or allowed_close(frame, outcome), (outcome, frame)
                if outcome.close_code is not None:
                    await ws.close()
                    ws = await fuzzer.connect()
                if not any(m["type"] == "session" for m in outcome.received):
                    await ws.send(json.dumps({"type": "start", "language": "en"}))
                    await fuzzer.recv_type(ws, "session")
                answer = await fuzzer.normal_turn(ws)
                assert answer["text"]
            finally:
                await ws.close()
            return
        ws = await fuzzer.started()
        outcome = await fuzzer.send_and_settle(ws, frame)
        assert outcome.close_code is None or allowed_close(frame, outcome), (outcome, frame)
        if outcome.close_code is not None:  # the protocol closed it: a new connection works
            fuzzer.ws = None
            ws = await fuzzer.started()
        else:
            assert outcome.received[-1]["type"] == "pong"
        answer = await fuzzer.normal_turn(ws)
        assert answer["text"]

    fuzzer.run(example())
    _assert_healthy(fuzzer)


def test_documented_error_codes_are_parsed() -> None:
    """The fuzz test's notion of 'documented' is only as good as this parse of docs/protocol.md."""
    codes = documented_error_codes()
    assert {"invalid_json", "binary_not_supported", "storage_failed", "unknown_turn"} <= codes
