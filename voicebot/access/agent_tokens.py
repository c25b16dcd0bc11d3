"""Signed, expiring agent tokens (JWT, HS256, audience ``voicebot-agent``): what a person at the
console signs in with when they should not hold an API key. Issued by ``POST /api/agents/tokens``
to an API key with scope ``agents:issue``; they carry the scope ``agents:act`` only, the agent's
name and one tenant (or ``*``)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import jwt

from voicebot.access.tokens import ALGORITHM, AccessDenied

AGENT_AUDIENCE = "voicebot-agent"
AGENT_SCOPE = "agents:act"


@dataclass(frozen=True)
class AgentClaims:
    name: str
    tenant: str  # "*": every tenant
    expires_at: float


class AgentTokenIssuer:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def issue(self, name: str, tenant: str) -> tuple[str, AgentClaims]:
        now = time.time()
        claims = AgentClaims(name=name, tenant=tenant, expires_at=now + self.ttl_s)
        payload = {"aud": AGENT_AUDIENCE, "iat": int(now), "exp": int(claims.expires_at), "jti": secrets.token_hex(8),
                   "sub": name, "tenant": tenant, "scope": AGENT_SCOPE}
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), claims

    def verify(self, token: str) -> AgentClaims:
        try:
            payload = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=AGENT_AUDIENCE,
                                 options={"require": ["exp", "iat", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AccessDenied("the agent token has expired: ask for a new one") from None
        except jwt.InvalidTokenError:
            raise AccessDenied("the agent token is not valid") from None
        name, tenant = payload.get("sub"), payload.get("tenant")
        if not isinstance(name, str) or not isinstance(tenant, str) or payload.get("scope") != AGENT_SCOPE:
            raise AccessDenied("the agent token is not valid")
        return AgentClaims(name=name, tenant=tenant, expires_at=float(payload["exp"]))


def looks_like_jwt(credential: str) -> bool:
    """A JWT has three dot-separated parts; API keys are checked otherwise."""
    return credential.count(".") == 2
