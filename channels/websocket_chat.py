"""Websocket chat channel: the JSON protocol of docs/protocol.md over Starlette's websockets.

Each connection has a reader (client frames -> turns) and a writer (session events -> frames);
a bad frame gets an error frame and the conversation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicebot.channels.base import Channel
from voicebot.channels.chat_protocol import (
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
from voicebot.events import BotMessage, BotTextChunk, ErrorEvent
from voicebot.runtime import ResumeError, SessionHandle

log = logging.getLogger(__name__)

MAX_PENDING_TURNS = 8


class WebsocketChatChannel(Channel):
    name = "websocket"

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/ws", self.serve)]

    async def serve(self, websocket: WebSocket) -> None:
        origins = self.runtime.settings.server.allowed_origins
        origin = websocket.headers.get("origin")
        if origins and origin and origin not in origins:
            await websocket.close(code=1008, reason="origin not allowed")
            return
        await websocket.accept()
        await _Connection(self, websocket).run()


class _Connection:
    def __init__(self, channel: WebsocketChatChannel, websocket: WebSocket) -> None:
        self.channel = channel
        self.runtime = channel.runtime
        self.ws = websocket
        self.handle: SessionHandle | None = None
        self.writer: asyncio.Task[None] | None = None
        self.pending: set[str] = set()
        self.send_lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(payload, ensure_ascii=False, default=str))

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def run(self) -> None:
        ended_by_client = False
        try:
            while True:
                frame = await self.ws.receive()
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
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            await self.shutdown(ended_by_client)

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
                self.handle = await self.runtime.open_session(self.channel.name, resume_token=message.token)
            else:
                self.handle = await self.runtime.open_session(self.channel.name, language=message.language, user_id=message.user_id)
        except ResumeError as exc:
            raise ProtocolError("resume_failed", str(exc)) from None
        state = self.handle.session.state
        payload: dict[str, Any] = {
            "type": "session", "protocol": PROTOCOL_VERSION, "session_id": self.handle.id, "token": self.handle.token,
            "resumed": self.handle.resumed, "language": state.language,
        }
        if self.handle.resumed:
            payload["history"] = [{"user": h.user, "bot": h.bot, "language": h.language} for h in state.history]
        else:
            payload["welcome"] = self.runtime.welcome(self.handle)
        await self.send(payload)
        self.writer = asyncio.create_task(self.write_events(self.handle))

    async def user_message(self, message: UserMessage) -> None:
        assert self.handle is not None
        text = clean_text(message.text, self.runtime.settings.server.max_message_chars)
        if len(self.pending) >= MAX_PENDING_TURNS:
            raise ProtocolError("busy", f"at most {MAX_PENDING_TURNS} messages may wait for an answer; wait for the bot")
        turn_id = await self.handle.send_text(text)
        self.pending.add(turn_id)
        await self.send({"type": "ack", "turn_id": turn_id, "client_id": message.client_id})
        await self.send({"type": "typing", "turn_id": turn_id, "on": True})

    async def feedback(self, message: Feedback) -> None:
        """Store a rating of a bot message of this conversation (by its turn id) or of the
        conversation. Only stored turns can be rated: a message is sent after its turn is stored."""
        assert self.handle is not None
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
                    await self.send({"type": "chunk", "turn_id": event.turn_id, "index": event.index, "text": event.text})
                elif isinstance(event, BotMessage):
                    await self.send({"type": "message", "turn_id": event.turn_id, "text": event.text, "language": event.language,
                                     "handoff": event.handoff, "trace": event.trace})
                elif isinstance(event, ErrorEvent):
                    await self.error(event.code, event.message, turn_id=event.turn_id)
            except (WebSocketDisconnect, RuntimeError, OSError):
                gone = True  # client gone; the session still stores what it finishes

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until the answers to messages already sent are out."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def shutdown(self, ended_by_client: bool) -> None:
        if self.handle is not None:
            await self.handle.close()  # drains the pipeline: turns in flight are finished and stored
        if self.writer is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.writer, timeout=5)
        if ended_by_client:
            with contextlib.suppress(Exception):
                await self.ws.close(code=1000)
