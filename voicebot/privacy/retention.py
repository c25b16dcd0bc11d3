"""The retention job: conversations idle longer than ``privacy.retention_days`` are deleted.

Keeping conversations forever turns a support log into a liability; the job runs once at start
and then every ``privacy.retention_check_s`` in the server's own event loop (no cron to set up).
Conversations of sessions still connected are kept, whatever their age, so a live customer
never loses the conversation under their feet; with several workers that includes the sessions
every other worker serves (``held``: the conversations whose coordination lock is held). Each run leaves audit records with counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from voicebot.config import PrivacySettings

if TYPE_CHECKING:
    from voicebot.storage.base import Storage

log = logging.getLogger(__name__)

DAY_S = 86400.0


class RetentionJob:
    def __init__(self, storage: Storage, privacy: PrivacySettings, live_ids: Callable[[], Collection[str]] = tuple,
                 held: Callable[[], Awaitable[Collection[str]]] | None = None) -> None:
        self.storage = storage
        self.privacy = privacy
        self.live_ids = live_ids
        self.held = held  # conversations live on any worker; raises when that cannot be known (nothing is deleted then)
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.privacy.retention_days is not None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="voicebot-retention")

    async def run_once(self) -> int:
        """Delete what is due now; the number of conversations deleted."""
        if self.privacy.retention_days is None:
            return 0
        keep = set(self.live_ids())
        if self.held is not None:
            keep |= set(await self.held())
        return await self.storage.delete_conversations_older_than(self.privacy.retention_days * DAY_S, keep=keep, actor="retention")

    async def _loop(self) -> None:
        while True:
            try:
                deleted = await self.run_once()
                if deleted:
                    log.info("retention: deleted %d conversation(s) idle for more than %s days", deleted, self.privacy.retention_days)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed run (disk full, locked database) is retried next time
                log.exception("retention run failed")
            await asyncio.sleep(self.privacy.retention_check_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
