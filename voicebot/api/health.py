"""``GET /health``: liveness for load balancers and what is being served; ``GET /ready``:
readiness, whether this worker should get new conversations now (no API key needed for either)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from voicebot import __version__
from voicebot.core.runtime import BotRuntime

READINESS_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str
    version: str
    domain: str
    languages: list[str]
    active_sessions: int


class Dependency(BaseModel):
    ok: bool
    backend: str
    error: str | None = None


class Readiness(BaseModel):
    status: str  # "ready" or "not_ready"
    pid: int
    worker: str
    draining: bool
    active_sessions: int
    storage: Dependency
    coordination: Dependency


async def _storage_ok(runtime: BotRuntime) -> Dependency:
    """A cheap read through the storage protocol (a profile that does not exist), bounded in time."""
    backend = runtime.settings.storage.backend
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await runtime.storage.get_profile("voicebot-readiness-check")  # read only: whoever has this id
    except Exception as exc:  # noqa: BLE001 - any failure means: not ready
        return Dependency(ok=False, backend=backend, error=f"{type(exc).__name__}: {exc}"[:200])
    return Dependency(ok=True, backend=backend)


async def _coordination_ok(runtime: BotRuntime) -> Dependency:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            found: dict[str, Any] = await runtime.coordination.check()
    except TimeoutError:
        return Dependency(ok=False, backend="redis", error="no answer in time")
    return Dependency(ok=bool(found.get("ok")), backend=str(found.get("backend")), error=found.get("error"))


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Liveness and what is being served."""
        engine = runtime.engine if runtime.engines else None
        return Health(status="ok" if engine else "starting", version=__version__, domain=engine.domain.name if engine else "",
                      languages=engine.domain.languages if engine else [], active_sessions=len(runtime.sessions))

    @api.get("/ready", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness, "description": "not ready: starting, draining, or storage or Redis unreachable"}})
    async def ready() -> Readiness | JSONResponse:
        """Readiness for a load balancer: 200 when this worker takes new conversations (started,
        not draining, its storage and its coordination answer), else 503 saying which part fails.
        Live conversations go on while it says 503; only new ones should go elsewhere."""
        storage, coordination = await asyncio.gather(_storage_ok(runtime), _coordination_ok(runtime))
        ok = bool(runtime.engines) and not runtime.draining and storage.ok and coordination.ok
        body = Readiness(status="ready" if ok else "not_ready", pid=os.getpid(), worker=runtime.coordination.worker_id,
                         draining=runtime.draining, active_sessions=len(runtime.sessions), storage=storage, coordination=coordination)
        return body if ok else JSONResponse(body.model_dump(), status_code=503)

    return api
