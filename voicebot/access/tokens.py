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


class SessionTokenIssuer:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, tenant: str, *, customer: dict[str, str] | None = None, language: str | None = None) -> tuple[str, SessionClaims]:
        now = time.time()
        claims = SessionClaims(tenant=tenant, expires_at=now + self.ttl_s, token_id=secrets.token_hex(8),
                               customer=dict(customer or {}), language=language)
        payload: dict[str, Any] = {"aud": AUDIENCE, "iat": int(now), "exp": int(claims.expires_at), "jti": claims.token_id, "tenant": tenant}
        if claims.customer:
            payload["customer"] = claims.customer
        if language:
            payload["lang"] = language
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims

    def verify(self, token: str | None) -> SessionClaims:
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
        return SessionClaims(tenant=tenant, expires_at=float(payload["exp"]), token_id=str(payload["jti"]),
                             customer={str(k): str(v) for k, v in customer.items()}, language=payload.get("lang"))
