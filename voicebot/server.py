"""The HTTP server, composition only: the runtime, its channels' routes, the chat page, the REST
routers of voicebot.api (one per topic), CORS, and a graceful shutdown that lets channels finish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse

from voicebot import __version__
from voicebot.api import (
    agents,
    analytics,
    conversations,
    dashboard,
    domain,
    feedback,
    generator,
    health,
    insights,
    metrics,
    privacy,
    sessions,
)
from voicebot.api.common import declare_auth_responses
from voicebot.channels.base import load_channels
from voicebot.config import Settings
from voicebot.core.runtime import BotRuntime
from voicebot.resources import web_dir

log = logging.getLogger(__name__)

# In this order: it is the order of the paths in the OpenAPI document.
TOPICS = (health, sessions, conversations, feedback, generator, privacy, domain, agents, metrics, analytics, insights, dashboard)


def create_app(settings: Settings) -> FastAPI:
    runtime = BotRuntime(settings)
    channels = load_channels(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        log.info("voicebot ready: domain %s, channels %s", runtime.engine.domain.name, [c.name for c in channels])
        try:
            yield
        finally:
            for channel in channels:
                await channel.close()
            await runtime.close()

    app = FastAPI(title="voicebot", version=__version__, lifespan=lifespan,
                  description="Multilingual customer-service bot: chat and voice channels, conversations and their traces.")
    app.state.runtime = runtime
    app.state.channels = channels
    for channel in channels:
        app.router.routes.extend(channel.routes())
    origins = sorted({o for tenant in runtime.access.tenants for o in runtime.access.allowed_origins(tenant)})
    if origins:  # pages on these origins may fetch session tokens and post feedback from the browser
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(web_dir() / "chat.html", media_type="text/html")

    routers = [topic.router(runtime) for topic in TOPICS]
    # The channels' routes and each topic's, before inclusion: FastAPI includes a router lazily.
    declare_auth_responses([*app.router.routes, *(route for api in routers for route in api.routes)])
    for api in routers:
        app.include_router(api)
    return app


async def drain_sessions(app: FastAPI, grace_s: float) -> None:
    """SIGTERM: refuse new sessions, let each channel finish its live turns and say goodbye."""
    runtime: BotRuntime = app.state.runtime
    runtime.draining = True
    deadline = asyncio.get_running_loop().time() + grace_s
    log.info("draining %d session(s) for up to %.0f s", len(runtime.sessions), grace_s)
    await asyncio.gather(*(channel.drain(deadline) for channel in app.state.channels), return_exceptions=True)


def _graceful_server(config: Any, grace_s: float) -> Any:
    import uvicorn

    class _GracefulServer(uvicorn.Server):
        """uvicorn closes websockets (1012) at once on SIGTERM; first stop listening and let the
        channels finish their turns and say goodbye."""

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            for server in self.servers:
                server.close()
            await drain_sessions(self.config.app, grace_s)  # type: ignore[arg-type]
            await super().shutdown(sockets)

    return _GracefulServer(config)


def _uvicorn_config(settings: Settings, app: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app, host=settings.server.host, port=settings.server.port, ws="websockets-sansio",  # the `websockets` package, sans-I/O protocol
        ws_max_size=settings.server.max_frame_bytes, log_level="info", timeout_graceful_shutdown=10,
    )


def run_worker(settings: Settings, sockets: list[Any] | None = None) -> None:
    """One serving process: the app, uvicorn, the graceful SIGTERM; a ``shutdown`` control
    message (voicebot.coordination) stops it the same way."""
    app = create_app(settings)
    server = _graceful_server(_uvicorn_config(settings, app), settings.server.shutdown_grace_s)

    def stop() -> None:
        server.should_exit = True

    app.state.runtime.on_shutdown_request = stop
    server.run(sockets=sockets)


def serve(settings: Settings, workers: int = 1) -> None:
    """Serve with ``workers`` processes on one port (see voicebot.workers for when N > 1 is allowed)."""
    if workers == 1:
        run_worker(settings)
        return
    from voicebot.workers import supervise

    supervise(settings, workers)
