"""``voicebot control shutdown``: a control message to every worker of a deployment, through its
Redis (``[coordination] redis_url``), from any machine that reaches that Redis.

A worker that receives ``shutdown`` drains as at SIGTERM (no new sessions, live turns finish,
every client is told ``ended`` ``server_restart``) and exits with status 0; the supervisor of
``serve --workers N`` does not replace a worker that stopped so, and exits once all have.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from voicebot.config import ConfigError, Settings
from voicebot.coordination.base import ControlMessage, CoordinationUnavailable

KINDS = ("shutdown",)


async def send_control(settings: Settings, kind: str, wait_s: float) -> tuple[int, str]:
    """Broadcast ``kind``; how many workers it reached and a line saying what happened."""
    if settings.coordination.redis_url is None:
        raise ConfigError("control messages reach the workers through Redis, and coordination.redis_url is not set "
                          "(VOICEBOT_COORDINATION__REDIS_URL); a single process without Redis is stopped with SIGTERM")
    from voicebot.coordination import new_worker_id
    from voicebot.coordination.redis_coordinator import RedisCoordinator

    sender = f"control:{new_worker_id()}"
    coordinator = RedisCoordinator(settings.coordination, settings.limits, sender)
    try:
        reached = await coordinator.broadcast(ControlMessage(kind, origin=sender), wait_s=wait_s)
    finally:
        await coordinator.close()
    if not reached:
        return 0, f"{kind}: no worker listens on {settings.coordination.key_prefix}:control (none running, or another key_prefix)"
    return reached, (f"{kind} sent to {reached} worker(s); they drain (live turns finish, clients are told, up to "
                     f"server.shutdown_grace_s = {settings.server.shutdown_grace_s:g} s) and exit")


def add_command(sub: argparse._SubParsersAction, settings_of: Callable[[argparse.Namespace], Settings]) -> None:  # type: ignore[type-arg]
    control = sub.add_parser("control", help="send a control message to every worker of the deployment (through Redis)")
    control.add_argument("kind", choices=KINDS, help="shutdown: every worker drains as at SIGTERM and exits")
    control.add_argument("--config", type=Path, help="TOML or YAML settings file (for coordination.redis_url)")
    control.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each worker to acknowledge (default 10)")

    def run(args: argparse.Namespace) -> int:
        try:
            reached, line = asyncio.run(send_control(settings_of(args), args.kind, args.wait))
        except CoordinationUnavailable:
            print("voicebot: Redis (coordination.redis_url) cannot be reached: nothing was sent", file=sys.stderr)
            return 1
        print(line, flush=True)
        return 0 if reached else 1

    control.set_defaults(func=run)

