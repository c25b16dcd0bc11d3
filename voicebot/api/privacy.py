"""Data protection over REST: erase a customer (right to erasure), read the audit log, run
retention now. Scope ``data:erase``; the audit keeps counts only, never the data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from voicebot.access.http import Caller, requires
from voicebot.api.common import SQLITE_MAX_INT, refusal_response
from voicebot.coordination import CoordinationUnavailable
from voicebot.core.runtime import BotRuntime


class Erasure(BaseModel):
    """What an erasure deleted (counts only) and the audit record it left."""

    conversations: int
    turns: int
    states: int
    profiles: int
    audit_id: int
    wiped: bool = Field(description="true: no copy of the deleted data is left in the store's files; false: some may remain for a "
                        "while (SQLite: a concurrent reader kept the write-ahead log; PostgreSQL: always, until VACUUM and WAL "
                        "recycling, see docs/storage.md)")


class AuditRecord(BaseModel):
    id: int
    at: float
    action: str
    actor: str
    tenant: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AuditRecord]


class RetentionRun(BaseModel):
    deleted: int


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.delete("/api/customers/{user_id}", response_model=Erasure, tags=["privacy"],
                responses={503: {"description": "the other workers cannot be reached (Redis): nothing was erased; try again"}})
    async def erase_customer(user_id: str, caller: Caller = Depends(requires("data:erase"))) -> Erasure | JSONResponse:
        """Right to erasure: end the customer's live sessions (on every worker) and delete every
        conversation, turn, state and profile stored for ``user_id`` (in the key's tenant). Leaves
        an audit record with counts only."""
        try:
            erased = await runtime.erase_customer(user_id, caller.tenant, actor=caller.principal.name)
        except CoordinationUnavailable as exc:
            return refusal_response(exc)
        return Erasure(**{key: erased[key] for key in Erasure.model_fields})

    @api.get("/api/audit", response_model=AuditPage, tags=["privacy"])
    async def list_audit(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=SQLITE_MAX_INT),
                         caller: Caller = Depends(requires("data:erase"))) -> AuditPage:
        """Erasures, retention runs and key rotations, newest first: who, when, how many; never the data."""
        total, items = await runtime.storage.list_audit(caller.tenant, limit, offset)
        return AuditPage(total=total, limit=limit, offset=offset, items=[AuditRecord(**item) for item in items])

    @api.post("/api/retention/run", response_model=RetentionRun, tags=["privacy"],
              responses={403: {"description": "retention spans every tenant: an operator key (tenant '*') is needed"},
                         503: {"description": "which conversations other workers serve is unknown (Redis): nothing was deleted"}})
    async def run_retention(caller: Caller = Depends(requires("data:erase"))) -> RetentionRun | JSONResponse:
        """Apply ``privacy.retention_days`` now instead of waiting for the periodic job; conversations
        live on any worker are kept."""
        if caller.principal.tenant != "*":
            raise HTTPException(403, "retention spans every tenant: running it needs an operator key (tenant '*')")
        try:
            return RetentionRun(deleted=await runtime.retention.run_once())
        except CoordinationUnavailable as exc:
            return refusal_response(exc)

    return api
