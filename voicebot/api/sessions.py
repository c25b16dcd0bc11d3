"""``POST /api/session-token``: the signed, expiring token a chat widget or phone page needs
before it connects; anonymous or issued to an integrator's API key."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field

from voicebot.access.apikeys import ApiPrincipal, Forbidden, require_scope
from voicebot.access.control import TokenRateLimited
from voicebot.access.http import api_key_header, authenticate, bearer, presented_key
from voicebot.access.tokens import AccessDenied
from voicebot.api.common import BAD_BODY, refusal_response
from voicebot.coordination import CoordinationUnavailable
from voicebot.core.runtime import BotRuntime


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


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()
    settings = runtime.settings

    @api.post("/api/session-token", response_model=SessionToken, tags=["access"],
              responses={401: {"description": "an API key is required"}, 403: {"description": "origin, tenant or scope refused"},
                         429: {"description": "too many tokens from this address"},
                         503: {"description": "coordination (Redis) unreachable: no new conversations now"}, **BAD_BODY})
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
                await runtime.coordination.count_token_request(request.client.host if request.client else "unknown")
            except AccessDenied as exc:
                raise HTTPException(403, str(exc)) from None
            except TokenRateLimited as exc:
                return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(int(exc.retry_after_s))})
            except CoordinationUnavailable as exc:  # the shared token count cannot be reached: no new conversations now
                return refusal_response(exc)
        token, claims = access.tokens.issue(tenant, customer=body.customer, language=body.language)
        return SessionToken(token=token, tenant=tenant, expires_at=claims.expires_at)

    return api
