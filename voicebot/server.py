"""The HTTP server: channels' routes, the chat page, health, the conversations REST API and
customer feedback on them (what `voicebot export-dataset` filters training data by)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicebot import __version__
from voicebot.channels.base import Channel
from voicebot.channels.registry import load_channel_class
from voicebot.config import Settings
from voicebot.resources import web_dir
from voicebot.runtime import BotRuntime

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    domain: str
    languages: list[str]
    active_sessions: int


class ConversationSummary(BaseModel):
    id: str
    channel: str
    user_id: str | None
    language: str
    status: str
    turn_count: int
    created_at: float
    updated_at: float
    rating: int | None = None
    feedback: str | None = None


class ConversationPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ConversationSummary]


class Turn(BaseModel):
    turn_index: int
    turn_id: str
    user_text: str
    bot_text: str
    language: str
    intent: str | None
    path: str
    trace: dict[str, Any]
    created_at: float
    rating: int | None = None
    feedback: str | None = None
    interrupted: bool = False  # the caller barged in; delivered_text is what they heard
    delivered_text: str | None = None


class ConversationDetail(ConversationSummary):
    turns: list[Turn]
    state: dict[str, Any] | None


class ConversationFeedback(BaseModel):
    """Stars for the whole conversation; a new rating replaces the previous one."""

    model_config = ConfigDict(extra="forbid")
    rating: int = Field(ge=1, le=5, strict=True, description="1 (bad) .. 5 (excellent)")
    comment: str | None = Field(None, max_length=2000)


class TurnFeedback(BaseModel):
    """Thumbs up (1) or down (-1) for one bot message; a new rating replaces the previous one."""

    model_config = ConfigDict(extra="forbid")
    rating: int = Field(strict=True, description="-1: thumbs down, 1: thumbs up", json_schema_extra={"enum": [-1, 1]})
    comment: str | None = Field(None, max_length=2000)

    @field_validator("rating")
    @classmethod
    def _thumb(cls, value: int) -> int:
        if value not in (-1, 1):
            raise ValueError("a message is rated -1 (thumbs down) or 1 (thumbs up)")
        return value


def _comment(text: str | None) -> str | None:
    return (text or "").strip() or None


class FeedbackSaved(BaseModel):
    saved: bool


class GeneratorInfo(BaseModel):
    backend: str
    model: str | None
    precision: str | None
    device: str | None


class GeneratorSwap(BaseModel):
    model: str


def create_app(settings: Settings) -> FastAPI:
    runtime = BotRuntime(settings)
    channels: list[Channel] = [load_channel_class(name)(runtime) for name in settings.server.channels]

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
    for channel in channels:
        app.router.routes.extend(channel.routes())

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(web_dir() / "chat.html", media_type="text/html")

    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Liveness and what is being served."""
        engine = runtime.engine
        return Health(status="ok" if engine else "starting", version=__version__, domain=engine.domain.name if engine else "",
                      languages=engine.domain.languages if engine else [], active_sessions=len(runtime.sessions))

    @app.get("/api/conversations", response_model=ConversationPage, tags=["conversations"])
    async def list_conversations(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> ConversationPage:
        """Conversations, most recently active first."""
        total, items = await runtime.storage.list_conversations(limit, offset)
        return ConversationPage(total=total, limit=limit, offset=offset, items=[ConversationSummary(**i) for i in items])

    @app.get("/api/conversations/{conversation_id}", response_model=ConversationDetail, tags=["conversations"])
    async def get_conversation(conversation_id: str) -> ConversationDetail:
        """One conversation with every turn, its trace, and the current dialogue state."""
        found = await runtime.storage.get_conversation(conversation_id)
        if found is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        return ConversationDetail(**found)

    @app.get("/api/conversations/{conversation_id}/turns/{turn_index}/trace", tags=["conversations"])
    async def get_trace(conversation_id: str, turn_index: int) -> dict[str, Any]:
        """Why the bot said what it said in one turn."""
        found = await runtime.storage.get_conversation(conversation_id)
        if found is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        for turn in found["turns"]:
            if turn["turn_index"] == turn_index:
                return turn["trace"]
        raise HTTPException(404, f"conversation {conversation_id!r} has no turn {turn_index}")

    @app.post("/api/conversations/{conversation_id}/feedback", response_model=FeedbackSaved, tags=["feedback"],
              responses={404: {"description": "no such conversation"}})
    async def rate_conversation(conversation_id: str, body: ConversationFeedback) -> FeedbackSaved:
        """Rate a whole conversation (1..5 stars, optional comment)."""
        if not await runtime.storage.rate_conversation(conversation_id, rating=body.rating, comment=_comment(body.comment)):
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        return FeedbackSaved(saved=True)

    @app.post("/api/conversations/{conversation_id}/turns/{turn_index}/feedback", response_model=FeedbackSaved, tags=["feedback"],
              responses={404: {"description": "no such conversation or turn"}})
    async def rate_turn(conversation_id: str, turn_index: int, body: TurnFeedback) -> FeedbackSaved:
        """Rate one bot message (thumbs up 1 / down -1, optional comment); turns rated -1 are
        left out of exported training data by default."""
        if not await runtime.storage.rate_turn(conversation_id, turn_index=turn_index, rating=body.rating, comment=_comment(body.comment)):
            raise HTTPException(404, f"conversation {conversation_id!r} has no turn {turn_index}")
        return FeedbackSaved(saved=True)

    def generator_info() -> GeneratorInfo:
        generator = runtime.generator
        if generator is None:
            return GeneratorInfo(backend="none", model=None, precision=None, device=None)
        return GeneratorInfo(backend="seq2seq", model=generator.model_name, precision=generator.precision, device=generator.device)

    @app.get("/api/generator", response_model=GeneratorInfo, tags=["operations"])
    async def get_generator() -> GeneratorInfo:
        """The response generator in use."""
        return generator_info()

    @app.put("/api/generator", response_model=GeneratorInfo, tags=["operations"])
    async def swap_generator(body: GeneratorSwap) -> GeneratorInfo:
        """Hot-swap the generator (e.g. to a folder `voicebot train generator` wrote) without
        dropping sessions."""
        if settings.generation.backend != "seq2seq":
            raise HTTPException(409, "generation.backend is 'none': configure a seq2seq generator first")
        try:
            await runtime.swap_generator(body.model)
        except (OSError, ValueError) as exc:
            raise HTTPException(422, f"cannot load {body.model!r}: {exc}") from None
        return generator_info()

    return app


def serve(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        create_app(settings), host=settings.server.host, port=settings.server.port, ws="websockets-sansio",  # the `websockets` package, sans-I/O protocol
        ws_max_size=settings.server.max_frame_bytes, log_level="info", timeout_graceful_shutdown=10,
    )
