"""The SQL of retention and erasure in the PostgreSQL backend (the rules are ``voicebot.privacy.deletion``'s).

Functions run inside the caller's transaction (``PostgresStorage``), so the rows and the audit
record of their deletion are committed together. Conversations chosen for deletion are locked
(``FOR UPDATE SKIP LOCKED``): two workers running retention at once delete disjoint batches, and
a conversation a worker is saving a turn to right now is left for the next run.

Deleted rows are gone for every reader at commit; PostgreSQL reclaims their space later (VACUUM)
and its write-ahead log keeps them until the segment is recycled, so "gone from disk" rests on
encryption at rest here (``privacy.encrypt_at_rest``, on by default): see docs/storage.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

import psycopg


async def _rowcount(conn: psycopg.AsyncConnection, sql: str, args: Sequence[object]) -> int:
    cursor = await conn.execute(sql, args)
    return max(cursor.rowcount, 0)


async def delete_conversations(conn: psycopg.AsyncConnection, ids: Sequence[str]) -> Counter[str]:
    """Delete conversations with their turns and dialogue state; how many rows of each went."""
    ids = list(ids)
    counts: Counter[str] = Counter()
    counts["turns"] += await _rowcount(conn, "DELETE FROM turns WHERE conversation_id = ANY(%s::text[])", (ids,))
    counts["states"] += await _rowcount(conn, "DELETE FROM dialogue_state WHERE conversation_id = ANY(%s::text[])", (ids,))
    counts["conversations"] += await _rowcount(conn, "DELETE FROM conversations WHERE id = ANY(%s::text[])", (ids,))
    return counts


async def idle_conversations(conn: psycopg.AsyncConnection, cutoff: float, keep: Collection[str], limit: int) -> list[tuple[str, str | None]]:
    """Up to ``limit`` conversations (id, tenant) not updated since ``cutoff``, oldest first, except
    those in ``keep`` (sessions still connected); locked until the caller's commit."""
    cursor = await conn.execute(
        "SELECT id, tenant FROM conversations WHERE updated_at < %s AND id <> ALL(%s::text[]) "
        "ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (cutoff, list(keep), limit),
    )
    return [(row[0], row[1]) for row in await cursor.fetchall()]


async def delete_idle_profiles(conn: psycopg.AsyncConnection, cutoff: float) -> int:
    """Profiles not updated since ``cutoff`` whose customer has no conversation left."""
    return await _rowcount(
        conn,
        "DELETE FROM user_profiles p WHERE p.updated_at < %s AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.user_id = p.user_id)",
        (cutoff,),
    )


async def customer_conversations(conn: psycopg.AsyncConnection, user_id: str, tenant: str | None) -> list[str]:
    """The customer's conversations (of ``tenant`` when given), locked until the caller's commit."""
    cursor = await conn.execute(
        "SELECT id FROM conversations WHERE user_id = %s AND (%s::text IS NULL OR tenant = %s) ORDER BY id FOR UPDATE",
        (user_id, tenant, tenant),
    )
    return [row[0] for row in await cursor.fetchall()]


async def other_tenants_have_conversations(conn: psycopg.AsyncConnection, user_id: str, tenant: str | None) -> bool:
    if tenant is None:
        return False
    cursor = await conn.execute("SELECT 1 FROM conversations WHERE user_id = %s AND tenant <> %s LIMIT 1", (user_id, tenant))
    return await cursor.fetchone() is not None


async def delete_profile(conn: psycopg.AsyncConnection, user_id: str) -> int:
    return await _rowcount(conn, "DELETE FROM user_profiles WHERE user_id = %s", (user_id,))
