"""Reading the SQLite backend's bot turns for the training-set export.

A connection of its own, read-only, so an export beside a running server (WAL) neither blocks its
writes nor can change anything; rows are fetched a page at a time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from voicebot.storage.records import EXPORT_SQL

PAGE_ROWS = 500


def connect_read_only(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT 1 FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        # SQLite before 3.22 cannot open a WAL database read-only once its -shm file is gone
        # (after a clean shutdown); a plain connection that only reads does no harm.
        return sqlite3.connect(path, check_same_thread=False)


def export_cursor(db: sqlite3.Connection) -> sqlite3.Cursor:
    """Rows: conversation_id, bot_text, language, intent, path, trace, turn rating, conversation rating."""
    return db.execute(EXPORT_SQL)
