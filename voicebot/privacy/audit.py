"""The audit log: who deleted or re-encrypted what, and when, without the data itself.

Deleting personal data must leave proof that it was deleted, but the proof may not keep the data
alive. A record holds an action, an actor (an API key's name, ``retention``, ``cli``), a tenant and
a detail of counts and ids; ``check_detail`` refuses free text there, so a careless caller cannot
log a transcript into it. A customer is named by a hash of their id (``subject_ref``): an operator
asked "was customer X erased?" can check by hashing X, but the log alone does not name anyone.

Functions take the connection and run inside the caller's transaction, so a deletion and its record
are committed together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

AUDIT_SCHEMA = """
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

AUDIT_KEYS = ("id", "at", "action", "actor", "tenant", "detail")
_ID = re.compile(r"[\w:.\-]{1,80}")
MAX_IDS = 200


def subject_ref(user_id: str) -> str:
    """A customer's id as the audit log names it: a hash, not the id (which may be an e-mail)."""
    return "sha256:" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]


def check_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` if it holds only numbers, booleans, ids and lists of them; ValueError otherwise."""

    def allowed(value: Any) -> bool:
        if value is None or isinstance(value, bool | int | float):
            return True
        if isinstance(value, str):
            return bool(_ID.fullmatch(value))
        if isinstance(value, list | tuple):
            return len(value) <= MAX_IDS and all(allowed(item) and not isinstance(item, list | tuple) for item in value)
        return False

    for key, value in detail.items():
        if not _ID.fullmatch(str(key)) or not allowed(value):
            raise ValueError(f"audit detail {key!r} must be a count or an id (no free text, at most {MAX_IDS} ids)")
    return dict(detail)


def write_audit_row(db: sqlite3.Connection, action: str, actor: str, tenant: str | None, detail: Mapping[str, Any]) -> int:
    if not _ID.fullmatch(action):
        raise ValueError(f"audit action must be a short name, not {action!r}")
    if not 0 < len(actor) <= 120 or not actor.isprintable():  # an API key's name from the config
        raise ValueError(f"audit actor must be a short printable name, not {actor!r}")
    cursor = db.execute(
        "INSERT INTO audit_log (at, action, actor, tenant, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time(), action, actor, tenant, json.dumps(check_detail(detail), sort_keys=True)),
    )
    return int(cursor.lastrowid or 0)


def list_audit_rows(db: sqlite3.Connection, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """Newest first; only ``tenant``'s records when given (None: every tenant's and the global ones)."""
    where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
    total = db.execute(f"SELECT COUNT(*) FROM audit_log {where}", args).fetchone()[0]
    rows = db.execute(f"SELECT {', '.join(AUDIT_KEYS)} FROM audit_log {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                      (*args, limit, offset)).fetchall()
    items = [dict(zip(AUDIT_KEYS, row, strict=True)) for row in rows]
    for item in items:
        item["detail"] = json.loads(item["detail"])
    return total, items
