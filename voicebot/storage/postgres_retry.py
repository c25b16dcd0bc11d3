"""Which PostgreSQL errors are worth trying again, and the bounded retry around an operation.

A PostgreSQL restart (``pg_ctl restart -m fast``, a fail-over) cuts every connection: the
statement in flight fails with a connection error or ``admin_shutdown``, and for a moment new
connections are refused (``cannot_connect_now``) or time out. Those errors are transient: the
operation is run again on a fresh connection (the pool replaces broken ones), with a short
exponential back-off, for at most ``retry_for_s``; after that the error reaches the caller (a
turn gets ``storage_failed``), so a storage outage is never a hang. Deadlocks and serialization
failures roll the transaction back and are transient too.

Only operations that are idempotent are retried this way: one whose commit was cut may have been
committed, and running it again must store the same thing (``save_turn`` upserts the turn and
sets the state; ``create_conversation`` recognises its own row). Erasure and retention are not
retried: run again, they would audit a second, empty deletion.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg_pool import PoolTimeout
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs of a server going away or not there yet: admin_shutdown, crash_shutdown, cannot_connect_now.
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})


def is_transient(exc: BaseException) -> bool:
    """A lost or refused connection, or a transaction the server rolled back to break a conflict."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.errors.TransactionRollback):  # 40001 serialization failure, 40P01 deadlock
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in _SHUTDOWN_STATES
    return isinstance(exc, psycopg.InterfaceError) and "closed" in str(exc)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("storage: PostgreSQL %s (%s); trying again (attempt %d)", type(exc).__name__, exc, state.attempt_number + 1)


async def retry_transient(operation: Callable[[], Awaitable[T]], retry_for_s: float) -> T:
    """``operation()``, run again after transient errors for up to ``retry_for_s`` seconds."""
    retrying = AsyncRetrying(retry=retry_if_exception(is_transient), stop=stop_after_delay(retry_for_s),
                             wait=wait_exponential(multiplier=0.05, max=1.0), before_sleep=_log_retry, reraise=True)

    async def attempt() -> T:  # a coroutine function: tenacity awaits only those (a lambda's coroutine would be returned unawaited)
        return await operation()

    return await retrying(attempt)
