"""Coordination of a single process, in memory: today's behaviour, the default without Redis.

The limits are the in-process ones of ``voicebot.access.limits``; a conversation is served by
whichever session of this process opened it last (the runtime replaces a stale connection on
resume); control messages are handled here at once.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from voicebot.access.limits import MessageRateLimiter, SessionLimiter
from voicebot.coordination.base import ControlHandler, ControlMessage


class LocalClaim:
    """Nothing to lock: no other process serves this deployment."""

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.lost = False

    def release(self) -> None:
        pass


class LocalCoordinator:
    shared = False

    def __init__(self, sessions: SessionLimiter, message_rate: MessageRateLimiter, count_token: Callable[[str], None]) -> None:
        self.worker_id = f"local-{os.getpid()}"
        self.sessions = sessions
        self.message_rate = message_rate
        self._count_token = count_token
        self._on_control: ControlHandler | None = None

    async def start(self, on_control: ControlHandler, on_lost: Callable[[str], Awaitable[None]]) -> None:
        self._on_control = on_control

    async def close(self) -> None:
        self._on_control = None

    async def check(self) -> dict[str, Any]:
        return {"backend": "local", "ok": True}

    async def admit_session(self, client: str | None) -> Any:
        return self.sessions.acquire(client)

    async def claim_conversation(self, conversation_id: str) -> LocalClaim:
        return LocalClaim(conversation_id)

    async def held_conversations(self) -> set[str]:
        return set()  # this process's live sessions are all there is (the runtime knows them)

    async def count_message(self, key: str) -> None:
        self.message_rate.hit(key)

    def forget_messages(self, key: str) -> None:
        self.message_rate.forget(key)

    async def count_token_request(self, client: str) -> None:
        self._count_token(client)

    async def broadcast(self, message: ControlMessage, *, wait_s: float = 0.0) -> int:
        if self._on_control is not None:
            await self._on_control(message)
        return 1
