"""The coordination contract: what the workers of one deployment must agree on.

One process needs nothing more than memory (``local.LocalCoordinator``, the default). Several
processes, on one machine or many, agree through Redis (``redis_coordinator.RedisCoordinator``):

- *who serves a conversation*: ``claim_conversation`` takes a lock with an expiry that the worker
  renews while the session lives; a crashed worker's lock lapses after ``lock_ttl_s`` and the
  conversation can be resumed on any worker. A resume while another worker holds it is refused
  with ``ConversationInUse`` (``conversation_in_use``, 409, ``retry_after``);
- *what is live*: ``held_conversations`` names every conversation some worker serves now, so the
  retention job on one worker does not delete a conversation live on another;
- *the limits*: live sessions (in total and per client address), messages per conversation and
  session tokens per address count across every worker;
- *control messages*: ``broadcast`` reaches every worker, this one included (erasure ends a
  customer's live sessions wherever they are, a domain reload, a shutdown).

When the coordinator cannot be reached, new sessions are refused (``CoordinationUnavailable``,
503) and live ones go on: their messages are counted in memory meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicebot.core.errors import Busy, Refusal


class ConversationInUse(Refusal):
    """The conversation is being served by another live connection (on another worker): a
    conversation is served by one worker at a time. Retry after ``retry_after`` seconds: by then
    the other connection has ended or, if its worker died, its lock has lapsed."""

    code = "conversation_in_use"
    http_status = 409


class CoordinationUnavailable(Busy):
    """Redis (which the workers agree through) cannot be reached: new sessions are refused, live
    ones finish their turns."""

    code = "coordination_unavailable"


@dataclass(frozen=True)
class ControlMessage:
    """A message every worker acts on. ``kind``: ``end_customer_sessions`` (payload ``user_id``,
    ``tenant``), ``reload_domain`` (``tenant``), ``shutdown``. ``origin`` is the sending worker."""

    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


ControlHandler = Callable[[ControlMessage], Awaitable[None]]


class Slot(Protocol):
    """A live session's place in the session counts; releasing twice is harmless."""

    def release(self) -> None: ...


class Claim(Protocol):
    """This worker serves the conversation until ``release``; ``lost`` is set when the lock was
    taken over (its session must end: another worker serves the conversation now)."""

    conversation_id: str
    lost: bool

    def release(self) -> None: ...


class Coordinator(Protocol):
    """What the runtime asks before and while it serves sessions (see the module docstring)."""

    worker_id: str
    shared: bool  # True: other processes may serve the same deployment (resumes re-read the state after claiming)

    async def start(self, on_control: ControlHandler, on_lost: Callable[[str], Awaitable[None]]) -> None:
        """Connect and listen for control messages; ``on_lost(conversation_id)`` ends a session
        whose lock another worker took."""

    async def close(self) -> None: ...

    async def check(self) -> dict[str, Any]:
        """Readiness: ``{"backend": ..., "ok": bool, ...}``; never raises."""

    async def admit_session(self, client: str | None) -> Slot:
        """A place in the session limits or ``LimitExceeded`` (server_busy, too_many_sessions);
        ``CoordinationUnavailable`` when the counts cannot be reached."""

    async def claim_conversation(self, conversation_id: str) -> Claim:
        """Serve ``conversation_id`` here or ``ConversationInUse``; ``CoordinationUnavailable``."""

    async def held_conversations(self) -> set[str]:
        """The conversations a worker of this deployment serves now (their locks are held): the
        retention job keeps them, whatever their age. ``CoordinationUnavailable`` when that cannot
        be known (the job then deletes nothing this time)."""

    async def count_message(self, key: str) -> None:
        """One message of a conversation against the message rate; ``LimitExceeded("rate_limited")``."""

    def forget_messages(self, key: str) -> None:
        """The conversation's session ended here: memory kept for its rate may go once its window passed."""

    async def count_token_request(self, client: str) -> None:
        """One session token for ``client`` against ``limits.session_tokens_per_minute``
        (``TokenRateLimited``); ``CoordinationUnavailable``."""

    async def broadcast(self, message: ControlMessage, *, wait_s: float = 0.0) -> int:
        """Deliver ``message`` to every worker, this one included; with ``wait_s``, return once
        each worker reached has handled it (or the time is up). The number of workers reached."""
