"""The HTTP server: channels' routes, the chat page, health, the conversations REST API and
customer feedback on them (what `voicebot export-dataset` filters training data by)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicebot import __version__
from voicebot.access.apikeys import ApiPrincipal, Forbidden, require_scope
from voicebot.access.control import TokenRateLimited
from voicebot.access.http import Caller, api_key_header, authenticate, bearer, presented_key, requires
from voicebot.access.tokens import AccessDenied
from voicebot.channels.base import load_channels
from voicebot.config import Settings
from voicebot.privacy.masking import redact_turn
from voicebot.resources import web_dir
from voicebot.core.runtime import BotRuntime, DomainProblems

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    domain: str
    languages: list[str]
    active_sessions: int


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
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=4096)


class SessionTokenRequest(BaseModel):
    """What a chat widget or phone page asks for before it connects. ``customer`` is a verified
    identity (e.g. {"email": ...} of the logged-in user) and only accepted with an API key."""

    model_config = ConfigDict(extra="forbid")
    tenant: str | None = Field(None, max_length=64)
    language: str | None = Field(None, max_length=35)
    customer: dict[str, str] | None = Field(None, max_length=8)


class SessionToken(BaseModel):
    token: str
    tenant: str
    expires_at: float


class Erasure(BaseModel):
    """What an erasure deleted (counts only) and the audit record it left."""

    conversations: int
    turns: int
    states: int
    profiles: int
    audit_id: int
    wiped: bool = Field(description="false: a concurrent reader kept the write-ahead log from being truncated at once")


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


class KnowledgeArticle(BaseModel):
    id: str
    language: str
    title: str


class DomainInfo(BaseModel):
    tenant: str
    name: str
    languages: list[str]
    intents: list[str]
    knowledge: list[KnowledgeArticle]


# SQLite integers are 64-bit: a larger path or query integer is refused (422), not an OverflowError (500).
SQLITE_MAX_INT = 2**63 - 1
# FastAPI answers a body it cannot decode (not UTF-8, not JSON at all) with 400 before validation.
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "the request body cannot be parsed"}}


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

    @app.get("/health", response_model=Health, tags=["operations"])
    async def health() -> Health:
        """Liveness and what is being served."""
        engine = runtime.engine if runtime.engines else None
        return Health(status="ok" if engine else "starting", version=__version__, domain=engine.domain.name if engine else "",
                      languages=engine.domain.languages if engine else [], active_sessions=len(runtime.sessions))

    @app.post("/api/session-token", response_model=SessionToken, tags=["access"],
              responses={401: {"description": "an API key is required"}, 403: {"description": "origin, tenant or scope refused"},
                         429: {"description": "too many tokens from this address"}, **BAD_BODY})
    async def issue_session_token(request: Request, body: SessionTokenRequest,
                                  credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                                  header_key: str | None = Security(api_key_header)) -> SessionToken | JSONResponse:
        """A signed, expiring token that opens one chat (``/ws?access_token=``) or call (``/webrtc/offer``).
        Anonymous (a public chat widget) when ``auth.anonymous_sessions`` is on; an integrator's
        backend uses an API key with scope ``sessions:issue`` and may vouch for the customer."""
        access = runtime.access
        principal: ApiPrincipal | None = None
        if presented_key(credentials, header_key) is not None:
            principal = authenticate(request, credentials, header_key)
        tenant = body.tenant or (principal.tenant if principal and principal.tenant != "*" else access.default_tenant())
        if tenant not in access.tenants:
            raise HTTPException(403, f"this server hosts no tenant {tenant!r}")
        if principal is not None:
            try:
                require_scope(principal, "sessions:issue")
            except Forbidden as exc:
                raise HTTPException(403, str(exc)) from None
            if not principal.can_reach(tenant):
                raise HTTPException(403, f"the API key {principal.name!r} does not reach tenant {tenant!r}")
        else:
            if not settings.auth.anonymous_sessions:
                raise HTTPException(401, "session tokens are issued to API key holders only (auth.anonymous_sessions is off)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if body.customer:
                raise HTTPException(403, "only an API key holder (the integrator's backend) may vouch for a customer")
            try:
                access.check_origin(request.headers.get("origin"), tenant)
                access.count_token_request(request.client.host if request.client else "unknown")
            except AccessDenied as exc:
                raise HTTPException(403, str(exc)) from None
            except TokenRateLimited as exc:
                return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(int(exc.retry_after_s))})
        token, claims = access.tokens.issue(tenant, customer=body.customer, language=body.language)
        return SessionToken(token=token, tenant=tenant, expires_at=claims.expires_at)

    @app.get("/api/conversations", response_model=ConversationPage, tags=["conversations"])
    async def list_conversations(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=SQLITE_MAX_INT),
                                 caller: Caller = Depends(requires("transcripts:read"))) -> ConversationPage:
        """Conversations of the key's tenant, most recently active first."""
        total, items = await runtime.storage.list_conversations(limit, offset, tenant=caller.tenant)
        return ConversationPage(total=total, limit=limit, offset=offset, items=[ConversationSummary(**i) for i in items])

    @app.get("/api/conversations/{conversation_id}", response_model=ConversationDetail, tags=["conversations"],
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

    @app.get("/api/conversations/{conversation_id}/turns/{turn_index}/trace", tags=["conversations"],
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

    @app.post("/api/conversations/{conversation_id}/feedback", response_model=FeedbackSaved, tags=["feedback"],
              responses={404: {"description": "no such conversation"}, **BAD_BODY})
    async def rate_conversation(conversation_id: str, body: ConversationFeedback,
                                caller: Caller = Depends(requires("feedback:write"))) -> FeedbackSaved:
        """Rate a whole conversation (1..5 stars, optional comment)."""
        if not await runtime.storage.rate_conversation(conversation_id, rating=body.rating, comment=_comment(body.comment), tenant=caller.tenant):
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        return FeedbackSaved(saved=True)

    @app.post("/api/conversations/{conversation_id}/turns/{turn_index}/feedback", response_model=FeedbackSaved, tags=["feedback"],
              responses={404: {"description": "no such conversation or turn"}, **BAD_BODY})
    async def rate_turn(conversation_id: str, body: TurnFeedback, turn_index: int = Path(ge=0, le=SQLITE_MAX_INT),
                        caller: Caller = Depends(requires("feedback:write"))) -> FeedbackSaved:
        """Rate one bot message (thumbs up 1 / down -1, optional comment); turns rated -1 are
        left out of exported training data by default."""
        if not await runtime.storage.rate_turn(conversation_id, turn_index=turn_index, rating=body.rating, comment=_comment(body.comment),
                                               tenant=caller.tenant):
            raise HTTPException(404, f"conversation {conversation_id!r} has no turn {turn_index}")
        return FeedbackSaved(saved=True)

    def generator_info() -> GeneratorInfo:
        generator = runtime.generator
        if generator is None:
            return GeneratorInfo(backend="none", model=None, precision=None, device=None)
        return GeneratorInfo(backend="seq2seq", model=generator.model_name, precision=generator.precision, device=generator.device)

    @app.get("/api/generator", response_model=GeneratorInfo, tags=["operations"])
    async def get_generator(caller: Caller = Depends(requires("domain:manage"))) -> GeneratorInfo:
        """The response generator in use."""
        return generator_info()

    @app.put("/api/generator", response_model=GeneratorInfo, tags=["operations"],
             responses={403: {"description": "the generator serves every tenant: an operator key (tenant '*') is needed"},
                        409: {"description": "no seq2seq generator is configured"}, **BAD_BODY})
    async def swap_generator(body: GeneratorSwap, caller: Caller = Depends(requires("domain:manage"))) -> GeneratorInfo:
        """Hot-swap the generator (e.g. to a folder `voicebot train generator` wrote) without
        dropping sessions. The generator is shared by all tenants, so only an operator key may."""
        if caller.principal.tenant != "*":
            raise HTTPException(403, "the generator serves every tenant: swapping it needs an operator key (tenant '*')")
        if settings.generation.backend != "seq2seq":
            raise HTTPException(409, "generation.backend is 'none': configure a seq2seq generator first")
        try:
            await runtime.swap_generator(body.model)
        except (OSError, ValueError) as exc:
            raise HTTPException(422, f"cannot load {body.model!r}: {exc}") from None
        return generator_info()

    @app.delete("/api/customers/{user_id}", response_model=Erasure, tags=["privacy"])
    async def erase_customer(user_id: str, caller: Caller = Depends(requires("data:erase"))) -> Erasure:
        """Right to erasure: end the customer's live sessions and delete every conversation, turn,
        state and profile stored for ``user_id`` (in the key's tenant). Leaves an audit record
        with counts only."""
        erased = await runtime.erase_customer(user_id, caller.tenant, actor=caller.principal.name)
        return Erasure(**{key: erased[key] for key in Erasure.model_fields})

    @app.get("/api/audit", response_model=AuditPage, tags=["privacy"])
    async def list_audit(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=SQLITE_MAX_INT),
                         caller: Caller = Depends(requires("data:erase"))) -> AuditPage:
        """Erasures, retention runs and key rotations, newest first: who, when, how many; never the data."""
        total, items = await runtime.storage.list_audit(caller.tenant, limit, offset)
        return AuditPage(total=total, limit=limit, offset=offset, items=[AuditRecord(**item) for item in items])

    @app.post("/api/retention/run", response_model=RetentionRun, tags=["privacy"],
              responses={403: {"description": "retention spans every tenant: an operator key (tenant '*') is needed"}})
    async def run_retention(caller: Caller = Depends(requires("data:erase"))) -> RetentionRun:
        """Apply ``privacy.retention_days`` now instead of waiting for the periodic job."""
        if caller.principal.tenant != "*":
            raise HTTPException(403, "retention spans every tenant: running it needs an operator key (tenant '*')")
        return RetentionRun(deleted=await runtime.retention.run_once())

    def domain_tenant(caller: Caller) -> str:
        tenant = caller.tenant or runtime.access.default_tenant()
        if tenant not in runtime.engines:  # an operator key may name any ?tenant=
            raise HTTPException(404, f"this server hosts no tenant {tenant!r}")
        return tenant

    @app.get("/api/domain", response_model=DomainInfo, tags=["domain"], responses={404: {"description": "no such tenant"}})
    async def get_domain(caller: Caller = Depends(requires("domain:manage"))) -> DomainInfo:
        """The tenant's domain as served: languages, intents and knowledge-base articles."""
        tenant = domain_tenant(caller)
        domain = runtime.engines[tenant].domain
        articles = [KnowledgeArticle(id=a.id, language=a.language, title=a.title) for items in domain.articles.values() for a in items]
        return DomainInfo(tenant=tenant, name=domain.name, languages=domain.languages, intents=sorted(domain.spec.intents), knowledge=articles)

    @app.post("/api/domain/reload", response_model=DomainInfo, tags=["domain"],
              responses={404: {"description": "no such tenant"},
                         422: {"description": "the domain folder has problems; the served domain is unchanged"}})
    async def reload_domain(caller: Caller = Depends(requires("domain:manage"))) -> DomainInfo:
        """Load the tenant's domain folder again (after an edit): new sessions get it, live ones
        finish on the old one. A domain with problems is refused and the old one stays."""
        tenant = domain_tenant(caller)
        try:
            await runtime.reload_domain(tenant)
        except DomainProblems as exc:
            raise HTTPException(422, str(exc)) from None
        return await get_domain(caller)

    _declare_auth_responses(app)
    return app


def _declare_auth_responses(app: FastAPI) -> None:
    """Every route behind an API key can answer 401 and 403: say so in the OpenAPI document."""
    from fastapi.routing import APIRoute

    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api/"):
            route.responses.setdefault(401, {"description": "no API key, or an unknown one"})
            route.responses.setdefault(403, {"description": "the key lacks the scope, or does not reach the tenant"})


async def drain_sessions(app: FastAPI, grace_s: float) -> None:
    """SIGTERM: refuse new sessions, let each channel finish its live turns and say goodbye."""
    runtime: BotRuntime = app.state.runtime
    runtime.draining = True
    deadline = asyncio.get_running_loop().time() + grace_s
    log.info("draining %d session(s) for up to %.0f s", len(runtime.sessions), grace_s)
    await asyncio.gather(*(channel.drain(deadline) for channel in app.state.channels), return_exceptions=True)


def serve(settings: Settings) -> None:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn closes websockets (1012) at once on SIGTERM; first stop listening and let the
        channels finish their turns and say goodbye."""

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            for server in self.servers:
                server.close()
            await drain_sessions(self.config.app, settings.server.shutdown_grace_s)  # type: ignore[arg-type]
            await super().shutdown(sockets)

    config = uvicorn.Config(
        create_app(settings), host=settings.server.host, port=settings.server.port, ws="websockets-sansio",  # the `websockets` package, sans-I/O protocol
        ws_max_size=settings.server.max_frame_bytes, log_level="info", timeout_graceful_shutdown=10,
    )
    GracefulServer(config).run()
