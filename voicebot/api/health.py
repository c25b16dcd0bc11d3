"""``GET /health``: liveness for load balancers and what is being served (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from voicebot import __version__
from voicebot.core.runtime import BotRuntime


class Health(BaseModel):
    status: str
    version: str
    domain: str
    languages: list[str]
    active_sessions: int


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Liveness and what is being served."""
        engine = runtime.engine if runtime.engines else None
        return Health(status="ok" if engine else "starting", version=__version__, domain=engine.domain.name if engine else "",
                      languages=engine.domain.languages if engine else [], active_sessions=len(runtime.sessions))

    return api
