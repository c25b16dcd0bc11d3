"""The server's gatekeeper: one object the channels and the REST API ask before they let a
request in (session tokens, API keys, web origins, tenants)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from voicebot.access.agent_tokens import AgentTokenIssuer
from voicebot.access.apikeys import ApiKeyring
from voicebot.access.secrets import load_signing_secret
from voicebot.access.tokens import AccessDenied, OriginRefused, SessionClaims, SessionTokenIssuer
from voicebot.config import Settings


class TokenRateLimited(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many session tokens from this address; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class AccessControl:
    def __init__(self, settings: Settings, tenants: list[str], data_dir: Path) -> None:
        self.settings = settings
        self.tenants = tenants
        secret = load_signing_secret(settings.auth, data_dir)
        self.tokens = SessionTokenIssuer(secret, settings.auth.session_token_ttl_s)
        self.agent_tokens = AgentTokenIssuer(secret, settings.agents.token_ttl_s)  # audience voicebot-agent: never a session token
        self.keys = ApiKeyring(settings.auth.api_keys, set(tenants))
        self._token_rate = RateLimitItemPerMinute(settings.limits.session_tokens_per_minute)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._tracked: set[str] = set()

    def allowed_origins(self, tenant: str) -> list[str]:
        configured = self.settings.tenants.get(tenant)
        return (configured.allowed_origins if configured else []) or self.settings.server.allowed_origins

    def check_origin(self, origin: str | None, tenant: str) -> None:
        """Browsers always send Origin on websockets and cross-site requests: a page of an origin
        not on the tenant's list is refused. Clients that send none (servers, the CLI) pass:
        they need a token or a key anyway."""
        allowed = self.allowed_origins(tenant)
        if origin and allowed and origin not in allowed:
            raise OriginRefused(f"web origin {origin!r} is not allowed for this bot")

    def admit(self, token: str | None, origin: str | None, *, bound_to: str | None = None) -> SessionClaims:
        """The claims of a valid session token presented from an allowed origin (``bound_to``:
        a token issued for that one thing, e.g. a carrier's call id)."""
        claims = self.tokens.verify(token, bound_to=bound_to)
        if claims.tenant not in self.tenants:
            raise AccessDenied("the session token names a tenant this server does not host")
        self.check_origin(origin, claims.tenant)
        return claims

    def count_token_request(self, client: str) -> None:
        """Anonymous token requests per client address and minute, so one address cannot mint
        tokens (and with them sessions) without bound."""
        if client not in self._tracked:  # `limits` keeps every key for ever: drop idle ones
            self._tracked.add(client)
            asyncio.get_running_loop().call_later(61, self._forget_if_idle, client)
        if not self._limiter.hit(self._token_rate, "session-token", client):
            reset_at, _ = self._limiter.get_window_stats(self._token_rate, "session-token", client)
            raise TokenRateLimited(max(1.0, reset_at - time.time()))

    def _forget_if_idle(self, client: str) -> None:
        if self._limiter.get_window_stats(self._token_rate, "session-token", client).remaining >= self._token_rate.amount:
            self._limiter.clear(self._token_rate, "session-token", client)
            self._tracked.discard(client)
        else:
            asyncio.get_running_loop().call_later(61, self._forget_if_idle, client)

    def default_tenant(self) -> str:
        return self.tenants[0]
