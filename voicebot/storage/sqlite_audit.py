"""The audit log's table in the SQLite backend (what a record may hold: ``voicebot.privacy.audit``).

Functions run inside the caller's transaction, so a deletion and its record are committed
together or not at all.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from voicebot.storage.records import AUDIT_COLUMNS, audit_detail_json, audit_item


def insert_audit(db: sqlite3.Connection, record: dict[str, Any]) -> int:
    """Store a record made by ``privacy.audit.audit_record``; its id."""
    cursor = db.execute(
        "INSERT INTO audit_log (at, action, actor, tenant, detail) VALUES (?, ?, ?, ?, ?)",
        (record["at"], record["action"], record["actor"], record["tenant"], audit_detail_json(record)),
    )
    return int(cursor.lastrowid or 0)


def list_audit_rows(db: sqlite3.Connection, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """Newest first; only ``tenant``'s records when given (None: every tenant's and the global ones)."""
    where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
    total = db.execute(f"SELECT COUNT(*) FROM audit_log {where}", args).fetchone()[0]
    rows = db.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                      (*args, limit, offset)).fetchall()
    return total, [audit_item(row) for row in rows]
