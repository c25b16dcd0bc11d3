"""The SQL of retention and erasure (the rules are ``voicebot.privacy.deletion``'s).

Deleted must mean gone from the file, not just unlinked: the connection runs with
``PRAGMA secure_delete=ON`` (freed content is overwritten with zeros), and after a deletion the
write-ahead log, which still holds the pages as they were before, is checkpointed and truncated
(``wipe_freed_pages``). Until then an erased customer's text could be read from the raw files.

Functions run inside the caller's transaction (``SqliteStorage``), so the rows and the audit
record of their deletion are committed together.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Collection, Sequence

_CHUNK = 500  # ids per statement, well below SQLite's bound-parameter limit


def delete_conversations(db: sqlite3.Connection, ids: Sequence[str]) -> Counter[str]:
    """Delete conversations with their turns and dialogue state; how many rows of each went."""
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start:start + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        counts["turns"] += db.execute(f"DELETE FROM turns WHERE conversation_id IN ({marks})", chunk).rowcount
        counts["states"] += db.execute(f"DELETE FROM dialogue_state WHERE conversation_id IN ({marks})", chunk).rowcount
        counts["conversations"] += db.execute(f"DELETE FROM conversations WHERE id IN ({marks})", chunk).rowcount
    return counts


def idle_conversations(db: sqlite3.Connection, cutoff: float, keep: Collection[str], limit: int) -> list[tuple[str, str | None]]:
    """Up to ``limit`` conversations (id, tenant) not updated since ``cutoff``, oldest first, except
    those in ``keep`` (sessions still connected)."""
    rows = db.execute(
        "SELECT id, tenant FROM conversations WHERE updated_at < ? AND id NOT IN (SELECT value FROM json_each(?)) "
        "ORDER BY updated_at LIMIT ?",
        (cutoff, json.dumps(list(keep)), limit),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def delete_idle_profiles(db: sqlite3.Connection, cutoff: float) -> int:
    """Profiles not updated since ``cutoff`` whose customer has no conversation left."""
    return db.execute(
        "DELETE FROM user_profiles WHERE updated_at < ? AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.user_id = user_profiles.user_id)",
        (cutoff,),
    ).rowcount


def customer_conversations(db: sqlite3.Connection, user_id: str, tenant: str | None) -> list[str]:
    if tenant is not None:
        rows = db.execute("SELECT id FROM conversations WHERE user_id = ? AND tenant = ?", (user_id, tenant))
    else:
        rows = db.execute("SELECT id FROM conversations WHERE user_id = ?", (user_id,))
    return [row[0] for row in rows]


def other_tenants_have_conversations(db: sqlite3.Connection, user_id: str, tenant: str | None) -> bool:
    if tenant is None:
        return False
    return db.execute("SELECT 1 FROM conversations WHERE user_id = ? AND tenant != ? LIMIT 1", (user_id, tenant)).fetchone() is not None


def delete_profile(db: sqlite3.Connection, user_id: str) -> int:
    return db.execute("DELETE FROM user_profiles WHERE user_id = ?", (user_id,)).rowcount


def wipe_freed_pages(db: sqlite3.Connection) -> bool:
    """Copy the write-ahead log into the database and truncate it, so pages holding deleted rows
    as they were before the deletion are gone from the WAL file too. False when a reader (an
    export running) kept part of the log: the next wipe finishes it."""
    busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0
