"""The settings every worker of one deployment must share (docs/deploy.md), for the tests that
start several workers on one PostgreSQL and one Redis."""

from __future__ import annotations

import json
import secrets

from cryptography.fernet import Fernet


def shared_deployment_env(database_url: str, redis_url: str) -> dict[str, str]:
    """PostgreSQL and Redis, and the token secret and encryption keys: a token issued by one worker
    is accepted by the others, and each reads what the others stored."""
    return {
        "VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": database_url,
        "VOICEBOT_COORDINATION__REDIS_URL": redis_url,
        "VOICEBOT_AUTH__SECRET": secrets.token_urlsafe(40),
        "VOICEBOT_PRIVACY__ENCRYPTION_KEYS": json.dumps([Fernet.generate_key().decode()]),
    }
