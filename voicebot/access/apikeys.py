"""API keys of the REST/admin API: each names its holder, its tenant and its scopes. Only the
keys' SHA-256 is kept in memory, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from voicebot.access.tokens import AccessDenied
from voicebot.config import ApiKeySettings, ConfigError

ALL_TENANTS = "*"
MIN_KEY_CHARS = 24


@dataclass(frozen=True)
class ApiPrincipal:
    name: str
    tenant: str  # "*": an operator key that reaches every tenant
    scopes: frozenset[str]

    def can_reach(self, tenant: str) -> bool:
        return self.tenant in (ALL_TENANTS, tenant)


class Forbidden(Exception):
    """A valid key without the scope or tenant the request needs."""


class ApiKeyring:
    def __init__(self, keys: list[ApiKeySettings], tenants: set[str]) -> None:
        self._keys: list[tuple[bytes, ApiPrincipal]] = []
        for index, key in enumerate(keys):
            where = f"auth.api_keys[{index}] ({key.name})"
            if (key.key is None) == (key.key_sha256 is None):
                raise ConfigError(f"{where}: give exactly one of key or key_sha256")
            if key.key is not None and len(key.key.get_secret_value()) < MIN_KEY_CHARS:
                raise ConfigError(f"{where}: an API key must have at least {MIN_KEY_CHARS} characters")
            if key.tenant != ALL_TENANTS and key.tenant not in tenants:
                raise ConfigError(f"{where}: unknown tenant {key.tenant!r}; tenants are {sorted(tenants)}")
            digest = bytes.fromhex(key.key_sha256) if key.key_sha256 else hashlib.sha256(key.key.get_secret_value().encode()).digest()  # type: ignore[union-attr]
            self._keys.append((digest, ApiPrincipal(key.name, key.tenant, frozenset(key.scopes))))

    def authenticate(self, presented: str | None) -> ApiPrincipal:
        if not presented:
            raise AccessDenied("an API key is required (header 'Authorization: Bearer <key>' or 'X-API-Key')")
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for known, principal in self._keys:  # no early exit: the time taken does not tell which key is close
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise AccessDenied("unknown API key")
        return found


def require_scope(principal: ApiPrincipal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"the API key {principal.name!r} lacks the scope {scope!r}")
