"""The PostgreSQL backend's schema: numbered SQL files applied in order, once, at start.

``postgres_migrations/NNNN_name.sql`` are applied in version order and recorded in
``schema_migrations``. All pending ones run in one transaction (PostgreSQL's DDL is
transactional: after a crash either all of them are applied or none is) that first takes a
transaction-level advisory lock, so when several workers start at once one applies them and the
others wait, then find nothing left to do. The lock goes with the transaction: a worker killed
while migrating holds nothing.

Rules for a new migration: a new file with the next number, additive (a worker still running the
previous version must keep working against it: add columns and tables, never drop or rename in
the same release), and nothing that cannot run in a transaction (no ``CREATE INDEX
CONCURRENTLY``). A database migrated by a newer version opens with an older one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of schema migrations ("voicebot" in ASCII): any number, the same in every worker.
MIGRATION_LOCK = 0x766F696365626F74
_FILE = re.compile(r"(\d{4})_(\w+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The bundled migrations, in version order."""
    folder = resources.files("voicebot.storage") / "postgres_migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two PostgreSQL migrations share a version: {versions}")
    return found


LATEST_VERSION = max(migration.version for migration in migrations())


async def schema_exists(conn: psycopg.AsyncConnection) -> bool:
    cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cursor.fetchone()
    return bool(row and row[0])


async def migrate(conn: psycopg.AsyncConnection) -> list[int]:
    """Apply the pending migrations under the advisory lock; the versions applied now."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                           "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        cursor = await conn.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in await cursor.fetchall()}
        for migration in migrations():
            if migration.version in applied:
                continue
            await conn.execute(migration.sql.encode())  # no parameters: several statements in one go
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name))
            applied_now.append(migration.version)
        newer = sorted(version for version in applied if version > LATEST_VERSION)
    if applied_now:
        log.info("PostgreSQL schema migrated to version %d (applied %s)", LATEST_VERSION, applied_now)
    if newer:
        log.info("the PostgreSQL schema has migrations newer than this version (%s): they are additive, carrying on", newer)
    return applied_now


async def schema_version(conn: psycopg.AsyncConnection) -> int:
    cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
