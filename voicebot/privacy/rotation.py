"""Key rotation: re-encrypt every stored value under the newest key, so the old key can go.

Runs in batches of rows, each its own short transaction, so a server using the same database
keeps writing between them (start it with the new key first in its list: it then reads both).
A value already under the newest key is left as it is, so an interrupted rotation can simply be
run again. Unencrypted legacy values are encrypted on the way when encryption is on.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

from voicebot.privacy.crypto import TextCipher
from voicebot.privacy.sealing import SEALED_COLUMNS

BATCH_ROWS = 500


def rotate_all(db: sqlite3.Connection, cipher: TextCipher, encrypt_plaintext: bool,
               transaction: Callable[[], AbstractContextManager[None]]) -> Counter[str]:
    """Counts: ``reencrypted`` (was under an older key), ``encrypted`` (was plaintext),
    ``current`` (already under the newest key)."""
    counts: Counter[str] = Counter()
    for table, wanted in SEALED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        columns = tuple(c for c in wanted if c in present)
        last: object = -1 << 63
        while columns:
            # Read and rewrite a batch in one write transaction: a turn the server saves meanwhile
            # waits, instead of being overwritten by what was read before it.
            with transaction():
                rows = db.execute(f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                  (last, BATCH_ROWS)).fetchall()
                for rowid, *values in rows:
                    updates = _rotated(dict(zip(columns, values, strict=True)), cipher, encrypt_plaintext, counts)
                    if updates:
                        assignments = ", ".join(f"{column} = ?" for column in updates)
                        db.execute(f"UPDATE {table} SET {assignments} WHERE rowid = ?", (*updates.values(), rowid))
            if not rows:
                break
            last = rows[-1][0]
    return counts


def _rotated(values: dict[str, str | None], cipher: TextCipher, encrypt_plaintext: bool, counts: Counter[str]) -> dict[str, str]:
    updates = {}
    for column, value in values.items():
        if value is None:
            continue
        if TextCipher.is_encrypted(value):
            if cipher.under_newest_key(value):
                counts["current"] += 1
                continue
            counts["reencrypted"] += 1
        elif encrypt_plaintext:
            counts["encrypted"] += 1
        else:
            continue
        updates[column] = cipher.rotate(value)
    return updates
