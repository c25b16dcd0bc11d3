"""``POST .../feedback``: customers rate a conversation (stars) or one bot message (thumbs); what
`voicebot export-dataset` filters training data by. Scope ``feedback:write``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicebot.access.http import Caller, requires
from voicebot.api.common import BAD_BODY, SQLITE_MAX_INT
from voicebot.core.runtime import BotRuntime


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


class FeedbackSaved(BaseModel):
    saved: bool


def _comment(text: str | None) -> str | None:
    """A blank comment is no comment: store None, not whitespace."""
    return (text or "").strip() or None


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.post("/api/conversations/{conversation_id}/feedback", response_model=FeedbackSaved, tags=["feedback"],
              responses={404: {"description": "no such conversation"}, **BAD_BODY})
    async def rate_conversation(conversation_id: str, body: ConversationFeedback,
                                caller: Caller = Depends(requires("feedback:write"))) -> FeedbackSaved:
        """Rate a whole conversation (1..5 stars, optional comment)."""
        if not await runtime.storage.rate_conversation(conversation_id, rating=body.rating, comment=_comment(body.comment), tenant=caller.tenant):
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        return FeedbackSaved(saved=True)

    @api.post("/api/conversations/{conversation_id}/turns/{turn_index}/feedback", response_model=FeedbackSaved, tags=["feedback"],
              responses={404: {"description": "no such conversation or turn"}, **BAD_BODY})
    async def rate_turn(conversation_id: str, body: TurnFeedback, turn_index: int = Path(ge=0, le=SQLITE_MAX_INT),
                        caller: Caller = Depends(requires("feedback:write"))) -> FeedbackSaved:
        """Rate one bot message (thumbs up 1 / down -1, optional comment); turns rated -1 are
        left out of exported training data by default."""
        if not await runtime.storage.rate_turn(conversation_id, turn_index=turn_index, rating=body.rating, comment=_comment(body.comment),
                                               tenant=caller.tenant):
            raise HTTPException(404, f"conversation {conversation_id!r} has no turn {turn_index}")
        return FeedbackSaved(saved=True)

    return api
