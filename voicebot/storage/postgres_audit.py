"""The audit log's table in the PostgreSQL backend (what a record may hold: ``voicebot.privacy.audit``).

Functions run inside the caller's transaction, so a deletion and its record are committed
together or not at all.
"""

from __future__ import annotations

from typing import Any

import psycopg

from voicebot.storage.records import AUDIT_COLUMNS, audit_detail_json, audit_item


async def insert_audit(conn: psycopg.AsyncConnection, record: dict[str, Any]) -> int:
    """Store a record made by ``privacy.audit.audit_record``; its id."""
    cursor = await conn.execute(
        "INSERT INTO audit_log (at, action, actor, tenant, detail) VALUES (%s, %s, %s, %s, %s::jsonb) RETURNING id",
        (record["at"], record["action"], record["actor"], record["tenant"], audit_detail_json(record)),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def list_audit_rows(conn: psycopg.AsyncConnection, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """Newest first; only ``tenant``'s records when given (None: every tenant's and the global ones)."""
    where, args = ("WHERE tenant = %s", (tenant,)) if tenant is not None else ("", ())
    cursor = await conn.execute(f"SELECT COUNT(*) FROM audit_log {where}", args)
    total = (await cursor.fetchone() or (0,))[0]
    cursor = await conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log {where} ORDER BY id DESC LIMIT %s OFFSET %s", (*args, limit, offset))
    return int(total), [audit_item(row) for row in await cursor.fetchall()]
