"""Key rotation over the PostgreSQL backend's sealed columns (which value to rewrite:
``voicebot.privacy.rotation``).

Walks each table by primary key in batches, each its own short transaction that locks the rows
it rewrites (``FOR UPDATE``): a turn the server saves meanwhile waits for the batch instead of
being overwritten by what the batch read before it. A batch is idempotent (values already under
the newest key are left alone), so one cut by a PostgreSQL restart is simply run again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from psycopg_pool import AsyncConnectionPool

from voicebot.privacy.crypto import TextCipher
from voicebot.privacy.rotation import BATCH_ROWS, rotated
from voicebot.storage.records import SEALED_COLUMNS

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "turns": ("conversation_id", "turn_index"),
    "conversations": ("id",),
    "dialogue_state": ("conversation_id",),
    "user_profiles": ("user_id",),
}
Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


async def rotate_all(pool: AsyncConnectionPool, cipher: TextCipher, encrypt_plaintext: bool, retry: Retry) -> Counter[str]:
    """Every sealed column of every row under the newest key; the counts of ``rotated``."""
    counts: Counter[str] = Counter()
    for table, columns in SEALED_COLUMNS.items():
        keys = PRIMARY_KEYS[table]
        after: tuple[Any, ...] | None = None
        while True:
            after, batch_counts = await retry(partial(_rotate_batch, pool, table, keys, columns, after, cipher, encrypt_plaintext))
            counts.update(batch_counts)
            if after is None:
                break
    return counts


async def _rotate_batch(pool: AsyncConnectionPool, table: str, keys: tuple[str, ...], columns: tuple[str, ...], after: tuple[Any, ...] | None,
                        cipher: TextCipher, encrypt_plaintext: bool) -> tuple[tuple[Any, ...] | None, Counter[str]]:
    """One batch after the key ``after``: the last key it saw (None when the table is done) and its counts."""
    counts: Counter[str] = Counter()
    key_list = ", ".join(keys)
    where = f"WHERE ({key_list}) > ({', '.join(['%s'] * len(keys))})" if after is not None else ""
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(f"SELECT {key_list}, {', '.join(columns)} FROM {table} {where} ORDER BY {key_list} LIMIT %s FOR UPDATE",
                                    (*(after or ()), BATCH_ROWS))
        rows = await cursor.fetchall()
        for row in rows:
            key, values = row[:len(keys)], row[len(keys):]
            updates = rotated(dict(zip(columns, values, strict=True)), cipher, encrypt_plaintext, counts)
            if updates:
                assignments = ", ".join(f"{column} = %s" for column in updates)
                matches = " AND ".join(f"{name} = %s" for name in keys)
                await conn.execute(f"UPDATE {table} SET {assignments} WHERE {matches}", (*updates.values(), *key))
    return (tuple(rows[-1][:len(keys)]) if rows else None), counts
