"""The settings every worker of one deployment must share (docs/deploy.md), for the tests that
start several workers on one PostgreSQL and one Redis."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet

from tests.pg_server import PostgresServer, database_of
from tests.redis_server import RedisServer


def shared_deployment_env(database_url: str, redis_url: str) -> dict[str, str]:
    """PostgreSQL and Redis, and the token secret and encryption keys: a token issued by one worker
    is accepted by the others, and each reads what the others stored."""
    return {
        "VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": database_url,
        "VOICEBOT_COORDINATION__REDIS_URL": redis_url,
        "VOICEBOT_AUTH__SECRET": secrets.token_urlsafe(40),
        "VOICEBOT_PRIVACY__ENCRYPTION_KEYS": json.dumps([Fernet.generate_key().decode()]),
    }


@contextmanager
def deployment_services(postgres_server: PostgresServer, folder: Path) -> Iterator[dict[str, str]]:
    """A database of its own on the session's PostgreSQL and a Redis of its own in ``folder``,
    for one test module's workers; yields their shared settings, and removes both afterwards."""
    database = postgres_server.create_database()
    redis_server = RedisServer(folder / "redis").start()
    try:
        yield shared_deployment_env(database, redis_server.url)
    finally:
        redis_server.stop()
        postgres_server.drop_database(database_of(database))
