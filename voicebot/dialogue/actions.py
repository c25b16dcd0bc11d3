"""Run domain actions: Python callables from the domain folder, or HTTP webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from voicebot.dialogue.domain import ActionSpec, Domain


class ActionError(Exception):
    """An action failed; the policy answers politely and offers a human."""


class PreviewStopped(Exception):  # noqa: N818 - not an error: the preview ends here by design
    """A reply preview reached an action. A preview may have no effect the caller did not ask
    for (a lookup is logged by the backend, a cancellation is final), so it stops before any."""


_previewing: ContextVar[bool] = ContextVar("voicebot_previewing_reply", default=False)


@contextlib.contextmanager
def without_actions() -> Iterator[None]:
    """Within this block (this task and the tasks it starts) an action raises ``PreviewStopped``."""
    token = _previewing.set(True)
    try:
        yield
    finally:
        _previewing.reset(token)


@dataclass
class ActionContext:
    """What an action may use: the filled slots, the language, and the domain's own database."""

    action: str
    slots: dict[str, str]
    language: str
    session_id: str
    _db: sqlite3.Connection | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def query_one(self, sql: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        if self._db is None:
            raise ActionError("this domain has no database (seed.sql)")
        with self._lock:
            cursor = self._db.execute(sql, params)
            names = [column[0] for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        if self._db is None:
            raise ActionError("this domain has no database (seed.sql)")
        with self._lock:
            with self._db:
                return self._db.execute(sql, params).rowcount


def open_domain_database(domain: Domain, data_dir: Path) -> sqlite3.Connection | None:
    """The domain's own data (the demo's orders), seeded once from seed.sql into the data folder."""
    seed = domain.folder / "seed.sql"
    if not seed.is_file():
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(data_dir / f"domain-{domain.name}.sqlite", check_same_thread=False, timeout=10)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(seed.read_text(encoding="utf-8"))
    connection.commit()
    return connection


def _load_python(folder: Path, reference: str) -> Callable[[ActionContext], Any]:
    file_name, _, function = reference.partition(":")
    path = folder / file_name
    module_name = f"voicebot_domain_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ActionError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function)


class ActionRunner:
    def __init__(self, domain: Domain, database: sqlite3.Connection | None) -> None:
        self._domain = domain
        self._db = database
        self._db_lock = threading.Lock()
        self._python: dict[str, Callable[[ActionContext], Any]] = {}
        self._http: httpx.AsyncClient | None = None
        for name, spec in domain.spec.actions.items():
            if spec.python:
                self._python[name] = _load_python(domain.folder, spec.python)

    async def run(self, name: str, slots: dict[str, str], language: str, session_id: str) -> dict[str, Any]:
        spec: ActionSpec = self._domain.spec.actions[name]
        if _previewing.get():
            raise PreviewStopped(name)
        try:
            if spec.webhook:
                result = await self._call_webhook(name, spec, slots, language, session_id)
            else:
                context = ActionContext(name, dict(slots), language, session_id, self._db, self._db_lock)
                function = self._python[name]
                if inspect.iscoroutinefunction(function):
                    result = await asyncio.wait_for(function(context), spec.timeout_s)
                else:
                    result = await asyncio.wait_for(asyncio.to_thread(function, context), spec.timeout_s)
        except ActionError:
            raise
        except TimeoutError:
            raise ActionError(f"action {name} timed out after {spec.timeout_s}s") from None
        except Exception as exc:
            raise ActionError(f"action {name} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, dict) or not isinstance(result.get("outcome"), str):
            raise ActionError(f"action {name} must return a dict with a text 'outcome'")
        return result

    async def _call_webhook(self, name: str, spec: ActionSpec, slots: dict[str, str], language: str, session_id: str) -> Any:
        if self._http is None:
            # Retries cover connection failures only; a webhook that answered is not called twice.
            self._http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(retries=2))
        response = await self._http.post(
            spec.webhook or "",
            json={"action": name, "slots": slots, "language": language, "session_id": session_id},
            timeout=spec.timeout_s,
        )
        response.raise_for_status()
        return response.json()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
