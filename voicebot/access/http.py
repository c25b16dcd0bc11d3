"""FastAPI dependencies for the REST API: an API key (as a bearer token or ``X-API-Key``) with the
scope an endpoint needs, and the tenant the request may reach. Declared as security schemes so
the OpenAPI document (and clients generated from it) know how to authenticate."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from voicebot.access.apikeys import ALL_TENANTS, ApiPrincipal, Forbidden, require_scope
from voicebot.access.tokens import AccessDenied

bearer = HTTPBearer(auto_error=False, description="an API key as bearer token")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


@dataclass(frozen=True)
class Caller:
    principal: ApiPrincipal
    tenant: str | None  # None: an operator key reaching every tenant


def presented_key(credentials: HTTPAuthorizationCredentials | None, header_key: str | None) -> str | None:
    return credentials.credentials if credentials is not None else header_key


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None, header_key: str | None) -> ApiPrincipal:
    try:
        return request.app.state.runtime.access.keys.authenticate(presented_key(credentials, header_key))
    except AccessDenied as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


def requires(scope: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting API keys with ``scope``; ``?tenant=`` narrows an operator key."""

    async def dependency(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                         header_key: str | None = Security(api_key_header),
                         tenant: str | None = Query(None, max_length=64, description="operator keys: limit to one tenant")) -> Caller:
        principal = authenticate(request, credentials, header_key)
        try:
            require_scope(principal, scope)
        except Forbidden as exc:
            raise HTTPException(403, str(exc)) from None
        wanted = tenant
        if principal.tenant == ALL_TENANTS:
            return Caller(principal, wanted or None)
        if wanted and wanted != principal.tenant:
            raise HTTPException(403, f"the API key {principal.name!r} does not reach tenant {wanted!r}")
        return Caller(principal, principal.tenant)

    return dependency
