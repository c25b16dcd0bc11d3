"""Signed, expiring session tokens (JWT, HS256): what a chat widget or a phone page must show to
open a websocket or WebRTC session. The claims name the tenant and, when the integrator's backend
vouches for the customer, who they are, so the bot need not ask them to identify themselves."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from voicebot.core.errors import Unauthorized

AUDIENCE = "voicebot-session"
ALGORITHM = "HS256"


class AccessDenied(Unauthorized):
    """A request without a valid credential; the message says why without echoing secrets."""


class OriginRefused(AccessDenied):
    http_status = 403

    """A browser page of a web origin the tenant does not allow."""


@dataclass(frozen=True)
class SessionClaims:
    tenant: str
    expires_at: float
    token_id: str
    customer: dict[str, str] = field(default_factory=dict)  # verified by the issuer (an API key holder)
    language: str | None = None
    bound_to: str | None = None  # a token for one thing only (a carrier's call id): refused anywhere else


class SessionTokenIssuer:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, tenant: str, *, customer: dict[str, str] | None = None, language: str | None = None,
              bound_to: str | None = None, ttl_s: int | None = None) -> tuple[str, SessionClaims]:
        """A signed token; ``bound_to`` makes it good for that one thing only (``verify`` must be
        asked for it by name), ``ttl_s`` shortens its life below the configured one."""
        now = time.time()
        claims = SessionClaims(tenant=tenant, expires_at=now + (ttl_s or self.ttl_s), token_id=secrets.token_hex(8),
                               customer=dict(customer or {}), language=language, bound_to=bound_to)
        payload: dict[str, Any] = {"aud": AUDIENCE, "iat": int(now), "exp": int(claims.expires_at), "jti": claims.token_id, "tenant": tenant}
        if bound_to:
            payload["sub"] = bound_to
        if claims.customer:
            payload["customer"] = claims.customer
        if language:
            payload["lang"] = language
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims

    def verify(self, token: str | None, *, bound_to: str | None = None) -> SessionClaims:
        """The claims of a valid token. A token bound to something (``issue(bound_to=...)``) is
        valid only where that very thing is named, and an unbound one only where none is."""
        if not token:
            raise AccessDenied("a session token is required: POST /api/session-token first")
        try:
            payload = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=AUDIENCE,
                                 options={"require": ["exp", "iat", "jti", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AccessDenied("the session token has expired: get a new one") from None
        except jwt.InvalidTokenError:
            raise AccessDenied("the session token is not valid") from None
        tenant, customer = payload.get("tenant"), payload.get("customer") or {}
        if not isinstance(tenant, str) or not isinstance(customer, dict):
            raise AccessDenied("the session token is not valid")
        if payload.get("sub") != bound_to:
            raise AccessDenied("the session token is not valid here")
        return SessionClaims(tenant=tenant, expires_at=float(payload["exp"]), token_id=str(payload["jti"]),
                             customer={str(k): str(v) for k, v in customer.items()}, language=payload.get("lang"), bound_to=bound_to)
