"""``/api/conversations``: stored conversations of the key's tenant, one with every turn, and the
trace of one turn (why the bot said what it said). Read-only; scope ``transcripts:read``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel

from voicebot.access.http import Caller, requires
from voicebot.api.common import SQLITE_MAX_INT
from voicebot.core.runtime import BotRuntime
from voicebot.privacy.masking import redact_turn


class ConversationSummary(BaseModel):
    id: str
    tenant: str
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


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()
    settings = runtime.settings

    @api.get("/api/conversations", response_model=ConversationPage, tags=["conversations"])
    async def list_conversations(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=SQLITE_MAX_INT),
                                 caller: Caller = Depends(requires("transcripts:read"))) -> ConversationPage:
        """Conversations of the key's tenant, most recently active first."""
        total, items = await runtime.storage.list_conversations(limit, offset, tenant=caller.tenant)
        return ConversationPage(total=total, limit=limit, offset=offset, items=[ConversationSummary(**i) for i in items])

    @api.get("/api/conversations/{conversation_id}", response_model=ConversationDetail, tags=["conversations"],
             responses={404: {"description": "no such conversation"}})
    async def get_conversation(conversation_id: str, caller: Caller = Depends(requires("transcripts:read"))) -> ConversationDetail:
        """One conversation with every turn, its trace, and the current dialogue state (PII masked
        like the transcript: the state keeps real values, encrypted, for the live conversation only)."""
        found = await runtime.storage.get_conversation(conversation_id, tenant=caller.tenant)
        if found is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        if settings.privacy.redact_stored and found["state"] is not None:
            found["state"] = redact_turn([], found["state"], runtime.storage.sealer.patterns.everything)[1]
        return ConversationDetail(**found)

    @api.get("/api/conversations/{conversation_id}/turns/{turn_index}/trace", tags=["conversations"],
             responses={404: {"description": "no such conversation or turn"}})
    async def get_trace(conversation_id: str, turn_index: int = Path(ge=0, le=SQLITE_MAX_INT),
                        caller: Caller = Depends(requires("transcripts:read"))) -> dict[str, Any]:
        """Why the bot said what it said in one turn."""
        found = await runtime.storage.get_conversation(conversation_id, tenant=caller.tenant)
        if found is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        for turn in found["turns"]:
            if turn["turn_index"] == turn_index:
                return turn["trace"]
        raise HTTPException(404, f"conversation {conversation_id!r} has no turn {turn_index}")

    return api
