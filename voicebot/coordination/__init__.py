"""Coordination between the workers of one deployment (see base.py): in memory for one process,
through Redis when ``[coordination] redis_url`` is set."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from voicebot.config import ConfigError, Settings
from voicebot.coordination.base import ControlMessage, ConversationInUse, CoordinationUnavailable, Coordinator
from voicebot.coordination.local import LocalCoordinator

if TYPE_CHECKING:
    from voicebot.access.limits import MessageRateLimiter, SessionLimiter

__all__ = ["ControlMessage", "ConversationInUse", "CoordinationUnavailable", "Coordinator", "build_coordinator", "new_worker_id"]


def new_worker_id() -> str:
    """Unique across machines and restarts: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def build_coordinator(settings: Settings, sessions: SessionLimiter, message_rate: MessageRateLimiter,
                      count_token: Callable[[str], None]) -> Coordinator:
    """Redis coordination when ``coordination.redis_url`` is set, else the in-process one (which
    keeps ``sessions``, ``message_rate`` and ``count_token``, today's in-memory limits)."""
    if settings.coordination.redis_url is None:
        return LocalCoordinator(sessions, message_rate, count_token)
    try:
        from voicebot.coordination.redis_coordinator import RedisCoordinator
    except ImportError as exc:
        raise ConfigError(f"coordination.redis_url is set but the redis extra is missing ({exc}): pip install 'voicebot[redis]'") from None
    return RedisCoordinator(settings.coordination, settings.limits, new_worker_id())
