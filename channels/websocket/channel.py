"""Websocket chat channel: the JSON protocol of docs/protocol.md over Starlette's websockets.

Each connection has a reader (client frames -> turns) and a writer (session events -> frames);
a bad frame gets an error frame and the conversation goes on.

Limits (settings.limits, voicebot/access/limits.py) refuse instead of queueing: a session beyond the
per-address or server-wide count gets an error frame and close 1013; a message beyond the rate
gets ``rate_limited`` with ``retry_after`` (and close 1008 when the client keeps ignoring it); a
client that stops reading is dropped after ``send_timeout_s`` so its unsent frames are not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any

from pydantic import BaseModel
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicebot.access.tokens import SessionClaims
from voicebot.channels.base import Channel, Goodbye
from voicebot.channels.websocket.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    End,
    Feedback,
    Ping,
    ProtocolError,
    Resume,
    Start,
    Typing,
    UserMessage,
    check_feedback,
    clean_text,
    parse,
)
from voicebot.core import jsontext
from voicebot.core.errors import Refusal, ResumeError, ShuttingDown
from voicebot.core.events import AgentMessage, AgentNotice, BotMessage, BotTextChunk, ErrorEvent
from voicebot.core.runtime import BotRuntime, SessionHandle

log = logging.getLogger(__name__)

MAX_PENDING_TURNS = 8


class WebsocketChatChannel(Channel):
    name = "websocket"

    def __init__(self, runtime: BotRuntime, options: BaseModel | None = None) -> None:
        super().__init__(runtime, options)
        self.connections: set[_Connection] = set()
        self._by_session: dict[str, _Connection] = {}

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/ws", self.serve)]

    async def serve(self, websocket: WebSocket) -> None:
        """Only a valid session token (``/ws?access_token=``, from POST /api/session-token) from an
        allowed web origin gets a connection; the refusal is an HTTP answer to the handshake."""
        try:
            claims = self.admit(websocket.query_params.get("access_token"), websocket.headers.get("origin"))
        except Refusal as exc:
            await refuse(websocket, exc)
            return
        await websocket.accept()
        connection = _Connection(self, websocket, claims)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            if connection.handle is not None:
                self._by_session.pop(connection.handle.id, None)

    async def drain(self, deadline: float) -> None:
        await super().drain(deadline)
        # Connections that never opened a session are closed too (the base knows only sessions).
        idle = [connection for connection in list(self.connections) if connection.handle is None]
        await asyncio.gather(*(connection.close_socket(1012, "server restarting") for connection in idle), return_exceptions=True)

    async def say_goodbye(self, handle: SessionHandle, goodbye: Goodbye, deadline: float) -> None:
        connection = self._by_session.get(handle.id)
        if connection is None:
            await handle.close()
            return
        await connection.say_goodbye(goodbye, deadline)


async def refuse(websocket: WebSocket, refusal: Refusal) -> None:
    """Answer the handshake with the refusal's HTTP status and JSON body (the client can read
    why); servers without the denial-response extension close with 1008 and the reason instead."""
    try:
        await websocket.send_denial_response(Channel.refusal_response(refusal))
    except RuntimeError:
        await websocket.close(code=1008, reason=refusal.message[:120])


class ClientStalled(ConnectionError):
    """The client did not take a frame within ``limits.send_timeout_s``: it has been dropped."""


class _Close(Exception):
    """End the connection with this close code (the error frame saying why is already sent)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]  # a close reason fits in 123 bytes


SESSION_REFUSALS = ("too_many_sessions", "server_busy", "coordination_unavailable")


def abort_transport(websocket: WebSocket) -> bool:
    """Drop the TCP connection under ``websocket`` now, unsent bytes included; False when the
    server does not let us reach it.

    ASGI has no abort, and a polite close does not free a stalled connection: uvicorn's
    ``transport.close()`` waits until the peer has read what is buffered, which a client that
    stopped reading never does. uvicorn's receive callable is a method of its protocol object,
    which holds the asyncio transport (Starlette wraps ``send``, not ``receive``)."""
    protocol = getattr(getattr(websocket, "_receive", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        return True
    return False


class RecentAnswers(OrderedDict[str, dict[str, Any]]):
    """The answers of a connection's last ``KEEP`` turns, for messages retried with their
    ``client_id`` (a client resends only what it has not seen answered: its last few). Bounded, so a
    long conversation does not hold every answer and trace it was given."""

    KEEP = 32

    def __setitem__(self, turn_id: str, answer: dict[str, Any]) -> None:
        super().__setitem__(turn_id, answer)
        while len(self) > self.KEEP:
            self.popitem(last=False)


class _Connection:
    def __init__(self, channel: WebsocketChatChannel, websocket: WebSocket, claims: SessionClaims) -> None:
        self.channel = channel
        self.claims = claims
        self.runtime = channel.runtime
        self.limits = channel.runtime.settings.limits
        self.ws = websocket
        self.client = websocket.client.host if websocket.client else None
        self.handle: SessionHandle | None = None
        self.writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.pending: set[str] = set()
        self.send_lock = asyncio.Lock()
        self.stalled = False
        self.refused_in_a_row = 0
        self.answered = RecentAnswers()  # turn id -> its stored answer, for messages retried with their client_id

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one frame, waiting at most ``send_timeout_s`` for the client to take it.

        uvicorn applies back-pressure (a send waits while the socket's write buffer is above its
        high-water mark) but waits for ever; the bound makes a stalled client cost a timeout
        instead of a task, a session slot and buffered frames kept until it goes away."""
        if self.stalled:
            raise ClientStalled("the client stopped reading")
        data = jsontext.dumps(payload, default=str)
        try:
            async with asyncio.timeout(self.limits.send_timeout_s), self.send_lock:
                await self.ws.send_text(data)
        except TimeoutError:
            self.stall()
            raise ClientStalled(f"the client took no frame for {self.limits.send_timeout_s:g} s") from None

    def stall(self) -> None:
        """Drop a client that stopped reading; its session ends as on a disconnect (turns in
        flight finish and are stored)."""
        if self.stalled:
            return
        self.stalled = True
        log.warning("websocket client %s stopped reading for %.1f s: dropped (session %s)", self.client,
                    self.limits.send_timeout_s, self.handle.id if self.handle else "-")
        if not abort_transport(self.ws) and self.reader is not None and self.reader is not asyncio.current_task():
            self.reader.cancel()  # no transport to abort: at least stop waiting for frames

    async def error(self, code: str, message: str, *, counted: bool = False, **extra: Any) -> None:
        """An error frame; counted in ``voicebot_errors_total`` unless the runtime already counted it."""
        if not counted:
            self.runtime.telemetry.error(code)
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def next_frame(self) -> dict[str, Any]:
        """The next client frame; a connection that opens no session within
        ``limits.start_timeout_s`` is closed, so a reused token cannot park idle sockets."""
        if self.handle is not None:
            return await self.ws.receive()
        try:
            async with asyncio.timeout(self.limits.start_timeout_s):
                return await self.ws.receive()
        except TimeoutError:
            await self.error("no_session", f"no 'start' or 'resume' within {self.limits.start_timeout_s:g} s")
            raise _Close(1008, "no session started") from None

    async def run(self) -> None:
        ended_by_client = False
        close: _Close | None = None
        self.reader = asyncio.current_task()
        try:
            while True:
                frame = await self.next_frame()
                if frame["type"] == "websocket.disconnect":
                    break
                if frame.get("bytes") is not None:
                    await self.error("binary_not_supported", "send JSON text frames; binary frames are not part of the chat protocol")
                    continue
                try:
                    if await self.handle_text(frame.get("text") or ""):
                        ended_by_client = True
                        break
                except ProtocolError as exc:
                    await self.error(exc.code, exc.message)
                except Refusal as exc:
                    await self.refused(exc)
        except _Close as exc:
            close = exc
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # gone, or stalled (ClientStalled)
        except asyncio.CancelledError:
            if not self.stalled:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # stall() stopped the reader: end normally
        finally:
            await self.shutdown(ended_by_client, close)

    async def refused(self, exc: Refusal) -> None:
        """Say which limit refused and, where waiting helps, for how long; a session refusal
        closes the connection (1013: try again later); ignoring rate refusals closes it (1008)."""
        extra = {"retry_after": exc.retry_after} if exc.retry_after is not None else {}
        await self.error(exc.code, exc.message, **extra)
        if exc.code in SESSION_REFUSALS or isinstance(exc, ShuttingDown):
            log.info("websocket client %s refused: %s", self.client, exc.code)
            raise _Close(1013, exc.message)
        if exc.code == "rate_limited":
            self.refused_in_a_row += 1
            if self.refused_in_a_row >= self.limits.refusals_before_close:
                log.warning("websocket client %s closed: %d rate-limited messages in a row", self.client, self.refused_in_a_row)
                raise _Close(1008, f"{self.refused_in_a_row} messages in a row over the rate limit")


    async def handle_text(self, raw: str) -> bool:
        """Handle one client frame; True when the client ended the conversation."""
        message = parse(raw)
        if isinstance(message, Ping):
            await self.send({"type": "pong"})
        elif isinstance(message, Start | Resume):
            await self.open(message)
        elif self.handle is None:
            raise ProtocolError("no_session", "send 'start' or 'resume' first")
        elif isinstance(message, UserMessage):
            await self.user_message(message)
        elif isinstance(message, Typing):
            pass  # the user is typing: nothing to do until an agent console exists
        elif isinstance(message, Cancel):
            cancelled = self.handle.cancel_turn(message.turn_id)
            self.pending.discard(message.turn_id)
            await self.send({"type": "cancelled", "turn_id": message.turn_id, "ok": cancelled})
        elif isinstance(message, Feedback):
            await self.feedback(message)
        elif isinstance(message, End):
            await self.drain()
            await self.send({"type": "ended", "reason": "client"})
            return True
        return False

    async def open(self, message: Start | Resume) -> None:
        if self.handle is not None:
            raise ProtocolError("already_started", "this connection already has a session")
        try:
            if isinstance(message, Resume):
                self.handle = await self.channel.open_session(self.claims, resume_token=message.token, client=self.client)
            else:
                self.handle = await self.channel.open_session(self.claims, language=message.language, user_id=message.user_id,
                                                              client=self.client)
        except (ResumeError, ShuttingDown) as exc:
            raise ProtocolError(exc.code, exc.message) from None
        self.channel._by_session[self.handle.id] = self
        state = self.handle.session.state
        payload: dict[str, Any] = {
            "type": "session", "protocol": PROTOCOL_VERSION, "session_id": self.handle.id, "token": self.handle.token,
            "resumed": self.handle.resumed, "language": state.language,
        }
        if self.handle.resumed:
            payload["history"] = [{"user": h.user, "bot": h.bot, "language": h.language} for h in state.history]
            payload.update(await self.stored_turns(len(state.history)))
            for turn in payload.pop("_answered"):
                self.answered[turn["turn_id"]] = turn
        else:
            payload["welcome"] = self.runtime.welcome(self.handle)
        await self.send(payload)
        self.writer = asyncio.create_task(self.write_events(self.handle))

    async def stored_turns(self, count: int) -> dict[str, Any]:
        """The last ``count`` stored turns (ids, traces, ratings) and the conversation's rating, so a
        resumed page shows "why?" and ratings again without access to the REST API."""
        assert self.handle is not None
        stored = await self.runtime.storage.get_conversation(self.handle.id, tenant=self.claims.tenant) or {"turns": [], "rating": None}
        keys = ("turn_index", "turn_id", "user_text", "bot_text", "language", "trace", "rating")
        turns = [{key: turn[key] for key in keys} for turn in stored["turns"][-count:]] if count else []
        # Answers to send again when a message is retried (same client_id) after a fail-over: the
        # text the customer was given (the state's history, in clear) where the history still has it.
        history = self.handle.session.state.history
        answered = []
        recent = stored["turns"][-RecentAnswers.KEEP:]
        for position, turn in enumerate(recent):
            back = len(recent) - position
            text = history[-back].bot if 0 < back <= len(history) else turn["bot_text"]
            answered.append({"turn_id": turn["turn_id"], "text": text, "language": turn["language"], "trace": turn["trace"]})
        return {"turns": turns, "rating": stored["rating"], "_answered": answered}

    async def user_message(self, message: UserMessage) -> None:
        assert self.handle is not None
        text = clean_text(message.text, self.runtime.settings.server.max_message_chars)
        turn_id = self.handle.turn_id_for(message.client_id) if message.client_id else None
        if turn_id is not None and await self.answer_again(turn_id, message.client_id):
            return
        if len(self.pending) >= MAX_PENDING_TURNS:
            await self.handle.count_message()  # a refused message still counts toward the rate
            raise ProtocolError("busy", f"at most {MAX_PENDING_TURNS} messages may wait for an answer; wait for the bot")
        turn_id = await self.handle.send_text(text, turn_id=turn_id)  # counts toward the message rate
        self.refused_in_a_row = 0
        if self.handle.with_agents:  # stored and forwarded to the agents: no bot answer to wait for
            await self.send({"type": "ack", "turn_id": turn_id, "client_id": message.client_id, "forwarded": True})
            return
        self.pending.add(turn_id)
        await self.send({"type": "ack", "turn_id": turn_id, "client_id": message.client_id})
        await self.send({"type": "typing", "turn_id": turn_id, "on": True})

    async def answer_again(self, turn_id: str, client_id: str | None) -> bool:
        """A message retried with the ``client_id`` of one already taken (after a reconnect or a
        fail-over to another worker) is answered once: its turn is acknowledged again and, if its
        answer is stored, that answer is sent again; no second turn is made. False: a new message."""
        assert self.handle is not None
        if turn_id in self.pending or self.handle.in_flight(turn_id):
            await self.send({"type": "ack", "turn_id": turn_id, "client_id": client_id, "repeated": True})
            return True
        stored = self.answered.get(turn_id)
        if stored is None:
            return False
        await self.send({"type": "ack", "turn_id": turn_id, "client_id": client_id, "repeated": True})
        await self.send({"type": "message", "turn_id": turn_id, "text": stored["text"], "language": stored["language"], "handoff": False,
                         "trace": stored["trace"], "repeated": True})
        return True

    async def feedback(self, message: Feedback) -> None:
        """Store a rating of a bot message of this conversation (by its turn id) or of the
        conversation. Only stored turns can be rated: a message is sent after its turn is stored."""
        assert self.handle is not None
        await self.handle.count_message()
        self.refused_in_a_row = 0
        rating, comment = check_feedback(message)
        storage = self.runtime.storage
        if message.turn_id is None:
            await storage.rate_conversation(self.handle.id, rating=rating, comment=comment)
            await self.send({"type": "feedback_saved", "rating": rating})
            return
        if not await storage.rate_turn(self.handle.id, turn_id=message.turn_id, rating=rating, comment=comment):
            raise ProtocolError("unknown_turn", f"this conversation has no answered turn {message.turn_id!r} to rate")
        await self.send({"type": "feedback_saved", "turn_id": message.turn_id, "rating": rating})

    async def write_events(self, handle: SessionHandle) -> None:
        """Forward session events; once the client is gone keep draining so the session can finish."""
        gone = False
        async for event in handle.events():
            if isinstance(event, BotMessage | ErrorEvent):
                self.pending.discard(event.turn_id)
            if gone:
                continue
            try:
                if isinstance(event, BotTextChunk):
                    await self.send({"type": "chunk", "turn_id": event.turn_id, "index": event.index, "text": event.text,
                                     "language": event.language})
                elif isinstance(event, BotMessage):
                    self.answered[event.turn_id] = {"text": event.text, "language": event.language, "trace": event.trace}
                    await self.send({"type": "message", "turn_id": event.turn_id, "text": event.text, "language": event.language,
                                     "handoff": event.handoff, "trace": event.trace})
                elif isinstance(event, ErrorEvent):
                    await self.error(event.code, event.message, turn_id=event.turn_id, counted=True)  # the runtime counts a turn's errors
                elif isinstance(event, AgentMessage):
                    await self.send({"type": "agent_message", "turn_id": event.turn_id, "text": event.text, "agent": event.agent})
                elif isinstance(event, AgentNotice):
                    await self.send({"type": "agent", "status": event.status, "agent": event.agent, "text": event.text,
                                     "language": event.language})
            except (WebSocketDisconnect, RuntimeError, OSError):
                gone = True  # client gone; the session still stores what it finishes
        if handle.end_reason is not None and not gone:
            await self.ended_by_server(handle.end_reason)

    async def ended_by_server(self, reason: str) -> None:
        """The server ended the session (its customer's data was erased, or another worker serves
        it now): say why, then close. After an erasure there is nothing left to resume."""
        with contextlib.suppress(Exception):
            await self.send({"type": "ended", "reason": reason, "resume": reason != "erased"})
        await self.close_socket(1000, f"conversation ended: {reason}")

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until the answers to messages already sent are out."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def say_goodbye(self, goodbye: Goodbye, deadline: float) -> None:
        """Graceful shutdown: answer the messages already sent, tell the client why the connection
        ends (in its language; it may resume on the restarted server), then close (1012)."""
        await self.drain(timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        with contextlib.suppress(Exception):
            await self.send({"type": "ended", "reason": "server_restart", "message": goodbye.text, "language": goodbye.language,
                             "resume": goodbye.resume})
        await self.close_socket(1012, "server restarting")

    async def shutdown(self, ended_by_client: bool, close: _Close | None = None) -> None:
        if close is not None:
            await self.close_socket(close.code, close.reason)  # a refused client hears it at once
        if self.handle is not None:
            await self.handle.close()  # drains the pipeline: turns in flight are finished and stored
        if self.writer is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.writer, timeout=5)
        if ended_by_client:
            await self.close_socket(1000)

    async def close_socket(self, code: int, reason: str = "") -> None:
        """Close politely if the client takes the close frame in time, else drop it."""
        if self.stalled:
            return
        try:
            async with asyncio.timeout(self.limits.send_timeout_s), self.send_lock:
                await self.ws.close(code=code, reason=reason)
        except TimeoutError:
            self.stall()
        except Exception:  # noqa: BLE001 - already closed or gone: nothing left to do
            pass
