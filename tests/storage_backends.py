"""The storage tests run against every built-in backend: one fixture, ``storage_backend``, per backend.

A test taking ``storage_backend`` runs twice, on SQLite (a file in ``tmp_path``) and on a real
PostgreSQL (a fresh database on the session's server, ``tests/pg_server.py``). Besides opening the
backend it reads what is really stored, below the backend: rows with the database's own driver
(sqlite3, psycopg) and the bytes on disk, so a privacy test checks the files, not the backend's
word.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.pg_server import PostgresServer, database_of
from voicebot.privacy.sealing import Sealer
from voicebot.storage.base import Storage
from voicebot.storage.postgres import PostgresStorage
from voicebot.storage.sqlite import SqliteStorage

BACKENDS = ("sqlite", "postgres")


@dataclass
class BackendUnderTest:
    name: str
    data_dir: Path
    postgres: PostgresServer | None = None
    url: str | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "voicebot.sqlite"

    @property
    def wipes_deleted_bytes(self) -> bool:
        """SQLite overwrites deleted rows and truncates its WAL; PostgreSQL keeps dead rows until
        VACUUM and in its WAL until recycled (docs/storage.md: encryption protects those copies)."""
        return self.name == "sqlite"

    def storage(self, sealer: Sealer | None = None) -> Storage:
        if self.name == "sqlite":
            return SqliteStorage(self.sqlite_path, sealer)
        assert self.url is not None
        return PostgresStorage(self.url, sealer)

    async def open(self, sealer: Sealer | None = None) -> Storage:
        storage = self.storage(sealer)
        await storage.open()
        return storage

    def env(self) -> dict[str, str]:
        """What configures a `voicebot` process (serve, rotate-keys, export-dataset) for this backend."""
        if self.name == "sqlite":
            return {"VOICEBOT_STORAGE__BACKEND": "sqlite", "VOICEBOT_STORAGE__PATH": str(self.sqlite_path)}
        assert self.url is not None
        return {"VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": self.url}

    def raw_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows read with the database's own driver, below the backend (no decryption)."""
        if self.name == "sqlite":
            with sqlite3.connect(self.sqlite_path) as db:
                return db.execute(sql).fetchall()
        assert self.url is not None
        with psycopg.connect(self.url) as db:
            return db.execute(sql.encode()).fetchall()

    def execute(self, sql: str) -> None:
        """Change rows behind the backend's back (age a conversation, say)."""
        if self.name == "sqlite":
            with sqlite3.connect(self.sqlite_path) as db:
                db.execute(sql)
            return
        assert self.url is not None
        with psycopg.connect(self.url) as db:
            db.execute(sql.encode())

    def raw_bytes(self) -> bytes:
        """What a copy of the disk holds: the SQLite file and its WAL, or the PostgreSQL database's
        files and the WAL written since the database was created."""
        if self.name == "sqlite":
            wal = self.sqlite_path.with_name(self.sqlite_path.name + "-wal")
            return self.sqlite_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        assert self.postgres is not None and self.url is not None
        return self.postgres.raw_bytes(database_of(self.url))


@pytest.fixture(params=BACKENDS)
def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendUnderTest]:
    """The backend a storage test runs on (SQLite, then PostgreSQL); PostgreSQL starts only when needed."""
    if request.param == "sqlite":
        yield BackendUnderTest("sqlite", tmp_path)
        return
    url = request.getfixturevalue("postgres_url")
    yield BackendUnderTest("postgres", tmp_path, request.getfixturevalue("postgres_server"), url)
