"""Admission limits: live sessions (overall and per client address) and user messages per session.

Every limit refuses at once with a reason and, where waiting helps, how long to wait: nothing is
queued, so load beyond a limit costs the server one refusal, not memory. Session counting lives
here (used by ``BotRuntime.open_session``) so every channel, an integrator's too, shares it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from voicebot.config import LimitSettings
from voicebot.core.errors import Busy, Refusal


class LimitExceeded(Refusal):
    """A limit refused: ``code`` is the protocol's error code (rate_limited: 429, the session
    limits: 503), ``retry_after`` says when trying again may work."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, code=code, http_status=429 if code in ("rate_limited", "too_many_sessions") else 503, retry_after=retry_after)


class SessionSlot:
    """One admitted session; releasing it twice is harmless, so every exit path may release."""

    def __init__(self, limiter: SessionLimiter, client: str | None) -> None:
        self._limiter = limiter
        self.client = client
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limiter._release(self.client)


class SessionLimiter:
    """Counts live sessions. Acquiring checks and counts in one synchronous step, so concurrent
    opens on the event loop cannot both take the last slot."""

    def __init__(self, max_sessions: int, per_client: int) -> None:
        self.max_sessions = max_sessions
        self.per_client = per_client
        self.active = 0
        self._by_client: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> SessionLimiter:
        return cls(settings.max_sessions, settings.sessions_per_client)

    def count(self, client: str) -> int:
        return self._by_client.get(client, 0)

    @property
    def clients(self) -> int:
        """Client addresses holding at least one session (0 once all are closed: nothing leaks)."""
        return len(self._by_client)

    def acquire(self, client: str | None) -> SessionSlot:
        """A slot for a new session, or ``LimitExceeded`` (``server_busy``, ``too_many_sessions``).
        ``client`` is the peer's address; None (an in-process channel) counts only in the total."""
        if self.active >= self.max_sessions:
            raise LimitExceeded("server_busy", f"the server is at its limit of {self.max_sessions} conversations; try again shortly")
        if client is not None and self._by_client[client] >= self.per_client:
            raise LimitExceeded("too_many_sessions",
                                f"at most {self.per_client} conversations may be open from one address; close one first")
        self.active += 1
        if client is not None:
            self._by_client[client] += 1
        return SessionSlot(self, client)

    def _release(self, client: str | None) -> None:
        self.active -= 1
        if client is not None:
            self._by_client[client] -= 1
            if self._by_client[client] <= 0:
                del self._by_client[client]


class MessageRateLimiter:
    """User messages per session: ``burst`` at once, ``per_second`` sustained.

    A moving window of the `limits` library: at most ``amount`` messages in any ``window_s``
    seconds. Its windows are whole seconds, so the window is ``burst / per_second`` rounded (at
    least 1 s) and the amount the larger of ``burst`` and what the rate allows in that window.
    Refused messages are not counted, so a client that waits as told is let in. The budget is
    the conversation's (keyed by session id), so a reconnect does not renew it; ``forget`` drops
    a closed session's key once its window has passed.
    """

    def __init__(self, per_second: float, burst: int) -> None:
        self.window_s = max(1, round(burst / per_second))
        self.amount = max(burst, math.floor(per_second * self.window_s))
        self._item = RateLimitItemPerSecond(self.amount, self.window_s)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> MessageRateLimiter:
        return cls(settings.messages_per_second, settings.message_burst)

    def hit(self, key: str) -> None:
        """Count one message of ``key`` (a session id) or raise ``LimitExceeded("rate_limited")``
        with the seconds until one more message is accepted."""
        if self._limiter.hit(self._item, key):
            return
        reset_at = self._limiter.get_window_stats(self._item, key).reset_time
        retry_after = max(0.01, math.ceil((reset_at - time.time()) * 100) / 100)  # rounded up: waiting that long is enough
        raise LimitExceeded("rate_limited", f"too many messages: at most {self.amount} in {self.window_s} s; "
                                            f"wait {retry_after:g} s before sending again", retry_after=retry_after)

    @property
    def keys(self) -> int:
        """Keys held in memory (sessions with recent messages)."""
        return len(self._limiter.storage.events)  # type: ignore[union-attr]

    def forget(self, key: str) -> None:
        """Drop ``key`` once its window has passed (call it when the session ends): `limits`'
        MemoryStorage expires the entries but keeps every key with an empty list for ever, a
        few hundred bytes per session ever opened. Waiting for the window keeps the budget of a
        conversation that is resumed at once; if it sent messages meanwhile, its key stays until
        it ends again."""
        asyncio.get_running_loop().call_later(self.window_s + 0.1, self._forget_if_idle, key)

    def _forget_if_idle(self, key: str) -> None:
        if self._limiter.get_window_stats(self._item, key).remaining >= self.amount:
            self._limiter.clear(self._item, key)


class CallSlot:
    """One admitted call; releasing it twice is harmless, so every exit path may release."""

    def __init__(self, limiter: CallLimiter) -> None:
        self._limiter: CallLimiter | None = limiter

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.active -= 1
            self._limiter = None


class CallLimiter:
    """Concurrent calls of the whole process, whatever their channel (``voice.max_calls``): a
    call needs most of a core here, so more are refused rather than all getting slow."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.active = 0

    def acquire(self) -> CallSlot:
        if self.active >= self.max_calls:
            raise Busy("too many calls at once; try again shortly")
        self.active += 1
        return CallSlot(self)
