"""The SQLite backend's tables, how an older database is brought up to them, and its transactions.

Columns are only ever added (``ADDED_COLUMNS``), so a database written by an older version opens
with the current one, and a newer one's extra columns do no harm.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    token_hash TEXT UNIQUE NOT NULL,
    channel TEXT NOT NULL,
    user_id TEXT,
    language TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    turn_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    rating INTEGER,
    feedback TEXT
);
CREATE INDEX IF NOT EXISTS conversations_updated ON conversations(updated_at);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    turn_index INTEGER NOT NULL,
    turn_id TEXT NOT NULL,
    user_text TEXT NOT NULL,
    bot_text TEXT NOT NULL,
    language TEXT NOT NULL,
    intent TEXT,
    path TEXT NOT NULL,
    trace TEXT NOT NULL,
    created_at REAL NOT NULL,
    rating INTEGER,
    feedback TEXT,
    PRIMARY KEY (conversation_id, turn_index)
);
CREATE TABLE IF NOT EXISTS dialogue_state (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS user_profiles (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    preferred_language TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""

# Columns added after the first release: databases created before them get them at open.
ADDED_COLUMNS = {
    "conversations": {"rating": "INTEGER", "feedback": "TEXT", "tenant": "TEXT NOT NULL DEFAULT 'default'"},
    "turns": {"rating": "INTEGER", "feedback": "TEXT", "interrupted": "INTEGER NOT NULL DEFAULT 0", "delivered_text": "TEXT"},
}

# After the added columns exist: the audit log and the indexes erasure and tenants read by.
LATER_SCHEMA = """
CREATE INDEX IF NOT EXISTS conversations_tenant ON conversations(tenant, updated_at);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    tenant TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log(tenant, id);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations(user_id);
"""


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """The one connection the backend writes with: autocommit (transactions are explicit),
    WAL, foreign keys, freed pages overwritten; tables created or upgraded. ``create=False``:
    FileNotFoundError when there is no database yet (a tool pointed at the wrong folder)."""
    if not create and not path.is_file():
        raise FileNotFoundError(f"no conversation database at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across process crashes
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        add_missing_columns(db)
        db.executescript(LATER_SCHEMA)
        db.execute("PRAGMA secure_delete=ON")  # deleted conversations are overwritten, not just unlinked
    except Exception:
        db.close()
        raise
    return db


def add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to the current columns (additive only)."""
    for table, columns in ADDED_COLUMNS.items():
        present = columns_of(db, table)
        for name, kind in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def columns_of(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
