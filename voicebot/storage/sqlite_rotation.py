"""Key rotation over the SQLite backend's sealed columns (which value to rewrite:
``voicebot.privacy.rotation``).

Runs in batches of rows, each its own short write transaction, so a server using the same
database keeps writing between them.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

from voicebot.privacy.crypto import TextCipher
from voicebot.privacy.rotation import BATCH_ROWS, rotated
from voicebot.storage.records import SEALED_COLUMNS
from voicebot.storage.sqlite_schema import columns_of


def rotate_all(db: sqlite3.Connection, cipher: TextCipher, encrypt_plaintext: bool,
               transaction: Callable[[], AbstractContextManager[None]]) -> Counter[str]:
    """Every sealed column of every row under the newest key; the counts of ``rotated``."""
    counts: Counter[str] = Counter()
    for table, wanted in SEALED_COLUMNS.items():
        present = columns_of(db, table)
        columns = tuple(c for c in wanted if c in present)
        last: object = -1 << 63
        while columns:
            # Read and rewrite a batch in one write transaction: a turn the server saves meanwhile
            # waits, instead of being overwritten by what was read before it.
            with transaction():
                rows = db.execute(f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                  (last, BATCH_ROWS)).fetchall()
                for rowid, *values in rows:
                    updates = rotated(dict(zip(columns, values, strict=True)), cipher, encrypt_plaintext, counts)
                    if updates:
                        assignments = ", ".join(f"{column} = ?" for column in updates)
                        db.execute(f"UPDATE {table} SET {assignments} WHERE rowid = ?", (*updates.values(), rowid))
            if not rows:
                break
            last = rows[-1][0]
    return counts
