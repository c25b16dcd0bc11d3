"""SQLite storage: conversations, turns with their traces, dialogue state, user profiles, feedback.

One connection in WAL mode, used from one worker thread, so writes are serialised without lock
contention and the event loop never blocks on disk. A turn and the state after it are written in
one transaction: after a crash either both are there or neither is, and a bot message is sent to
the client only once its turn is committed.

Customer feedback (a thumbs up/down per bot message, 1-5 stars per conversation, a comment) lives
on the rows it rates, so `voicebot export-dataset` can filter training examples with one join.

Conversation text is redacted and encrypted on its way in and decrypted on its way out
(``voicebot.privacy.sealing``); retention, erasure, the audit log and key rotation live in
``voicebot.privacy`` too, and are reached through the methods at the end of ``Storage``.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.batching import Batcher, BatchItem
from voicebot.privacy import deletion
from voicebot.privacy.audit import AUDIT_SCHEMA, list_audit_rows, subject_ref, write_audit_row
from voicebot.privacy.rotation import rotate_all
from voicebot.privacy.sealing import Sealer
from voicebot.core.session import DialogueState

T = TypeVar("T")

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
_ADDED_COLUMNS = {
    "conversations": {"rating": "INTEGER", "feedback": "TEXT", "tenant": "TEXT NOT NULL DEFAULT 'default'"},
    "turns": {"rating": "INTEGER", "feedback": "TEXT", "interrupted": "INTEGER NOT NULL DEFAULT 0", "delivered_text": "TEXT"},
}

_CONVERSATION_KEYS = ("id", "tenant", "channel", "user_id", "language", "status", "turn_count", "created_at", "updated_at", "rating", "feedback")
_CONVERSATION_COLUMNS = ", ".join(_CONVERSATION_KEYS)
_TURN_KEYS = ("turn_index", "turn_id", "user_text", "bot_text", "language", "intent", "path", "trace", "created_at", "rating", "feedback",
              "interrupted", "delivered_text")

TURN_RATINGS = (-1, 1)
CONVERSATION_RATINGS = range(1, 6)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class StoredTurn:
    conversation_id: str
    turn_index: int
    turn_id: str
    user_text: str
    bot_text: str
    language: str
    intent: str | None
    path: str
    trace: dict[str, Any]


class SqliteStorage:
    """The default backend (``[storage] backend = "sqlite"``): zero set-up, one file in the data dir."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: Path | None = Field(None, description="the database file; default: <storage.data_dir>/voicebot.sqlite")

    @classmethod
    def from_options(cls, options: SqliteStorage.Options, *, data_dir: Path, sealer: Sealer | None = None, **_: Any) -> SqliteStorage:
        return cls(options.path or data_dir / "voicebot.sqlite", sealer)

    def __init__(self, path: Path, sealer: Sealer | None = None) -> None:
        self.path = path
        # Redaction and encryption of stored text (voicebot.privacy.sealing); none by default.
        self.sealer = sealer or Sealer()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicebot-sqlite")
        self._db: sqlite3.Connection | None = None
        self._turn_batcher: Batcher[tuple[StoredTurn, dict[str, Any], str], None] = Batcher(
            self._write_turn_batch, max_batch=128, max_wait_s=0.0, name="storage"
        )

    async def _call(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across process crashes
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        _add_missing_columns(db)
        db.execute("CREATE INDEX IF NOT EXISTS conversations_tenant ON conversations(tenant, updated_at)")
        db.execute("PRAGMA secure_delete=ON")  # deleted conversations are overwritten, not just unlinked
        db.executescript(AUDIT_SCHEMA)
        try:
            self.sealer.verify(db)  # wrong key: a clear error at start, not at the first resume
        except Exception:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        await self._turn_batcher.close()
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("storage is not open")
        return self._db

    # -- conversations -------------------------------------------------------------------------
    async def create_conversation(self, conversation_id: str, token: str, channel: str, language: str, user_id: str | None, state: DialogueState,
                                  tenant: str = "default") -> None:
        def write() -> None:
            now = time.time()
            with _transaction(self.db):
                self.db.execute(
                    "INSERT INTO conversations (id, tenant, token_hash, channel, user_id, language, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (conversation_id, tenant, hash_token(token), channel, user_id, language, now, now),
                )
                self.db.execute(
                    "INSERT INTO dialogue_state (conversation_id, state, updated_at) VALUES (?, ?, ?)",
                    (conversation_id, self.sealer.seal_json(state.to_dict()), now),
                )
                if user_id:
                    self.db.execute(
                        "INSERT INTO user_profiles (user_id, preferred_language, created_at, updated_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(user_id) DO UPDATE SET updated_at = excluded.updated_at",
                        (user_id, language, now, now),
                    )

        await self._call(write)

    async def resume(self, token: str) -> tuple[dict[str, Any], DialogueState] | None:
        """The conversation and its last saved state for a resume token, or None."""

        def read() -> tuple[dict[str, Any], DialogueState] | None:
            row = self.db.execute(
                "SELECT c.id, c.channel, c.user_id, c.language, c.status, c.turn_count, c.tenant, s.state FROM conversations c "
                "JOIN dialogue_state s ON s.conversation_id = c.id WHERE c.token_hash = ?",
                (hash_token(token),),
            ).fetchone()
            if row is None:
                return None
            info = dict(zip(("id", "channel", "user_id", "language", "status", "turn_count", "tenant"), row[:7], strict=True))
            return info, DialogueState.from_dict(self.sealer.open_json(row[7]))

        return await self._call(read)

    async def save_turn(self, turn: StoredTurn, state: DialogueState, status: str) -> None:
        """Store a turn and the state after it atomically.

        Turns of concurrent sessions are committed together (group commit): one transaction per
        batch instead of one per turn. If a batch fails, the batcher retries its parts so only
        the turn at fault gets the error.
        """
        await self._turn_batcher.submit((turn, state.to_dict(), status))

    async def _write_turn_batch(self, items: Sequence[BatchItem[tuple[StoredTurn, dict[str, Any], str]]]) -> list[None]:
        payloads = [item.payload for item in items]
        await self._call(self._write_turns, payloads)
        return [None] * len(payloads)

    def _write_turns(self, payloads: list[tuple[StoredTurn, dict[str, Any], str]]) -> None:
        # Redacted and encrypted before the write lock is taken (the live turn used the real text).
        sealed = [(self.sealer.seal_turn(turn.user_text, turn.bot_text, turn.trace, turn.language), self.sealer.seal_json(state))
                  for turn, state, _ in payloads]
        now = time.time()
        with _transaction(self.db):
            for (turn, state, status), ((user_text, bot_text, trace), sealed_state) in zip(payloads, sealed, strict=True):
                self.db.execute(
                    "INSERT OR REPLACE INTO turns (conversation_id, turn_index, turn_id, user_text, bot_text, language, intent, path, trace, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (turn.conversation_id, turn.turn_index, turn.turn_id, user_text, bot_text, turn.language, turn.intent, turn.path,
                     trace, now),
                )
                self.db.execute(
                    "UPDATE dialogue_state SET state = ?, updated_at = ? WHERE conversation_id = ?",
                    (sealed_state, now, turn.conversation_id),
                )
                self.db.execute(
                    "UPDATE conversations SET language = ?, status = ?, turn_count = MAX(turn_count, ?), updated_at = ? WHERE id = ?",
                    (state["language"], status, turn.turn_index, now, turn.conversation_id),
                )
                # A known customer's next conversation starts in the language they last used.
                self.db.execute(
                    "UPDATE user_profiles SET preferred_language = ?, updated_at = ? "
                    "WHERE user_id = (SELECT user_id FROM conversations WHERE id = ?)",
                    (state["language"], now, turn.conversation_id),
                )

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            row = self.db.execute(
                "SELECT user_id, display_name, preferred_language, data, created_at, updated_at FROM user_profiles WHERE user_id = ?", (user_id,)
            ).fetchone()
            if row is None:
                return None
            keys = ("user_id", "display_name", "preferred_language", "data", "created_at", "updated_at")
            profile = dict(zip(keys, row, strict=True))
            profile["display_name"] = self.sealer.open(profile["display_name"])
            profile["data"] = self.sealer.open_json(profile["data"])
            return profile

        return await self._call(read)

    async def end_conversation(self, conversation_id: str) -> None:
        def write() -> None:
            with _transaction(self.db):
                self.db.execute(
                    "UPDATE conversations SET status = CASE WHEN status = 'handed_off' THEN status ELSE 'ended' END, updated_at = ? WHERE id = ?",
                    (time.time(), conversation_id),
                )

        await self._call(write)

    # -- feedback -------------------------------------------------------------------------------
    async def rate_turn(self, conversation_id: str, *, turn_index: int | None = None, turn_id: str | None = None,
                        rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate one bot message (-1 or 1), found by its index or by its live turn id; False when
        there is no such turn. A new rating replaces the previous one and its comment."""
        if rating not in TURN_RATINGS:
            raise ValueError(f"a message rating is -1 or 1, not {rating!r}")
        if (turn_index is None) == (turn_id is None):
            raise ValueError("name the turn by turn_index or by turn_id (exactly one)")
        column, key = ("turn_index", turn_index) if turn_index is not None else ("turn_id", turn_id)

        def write() -> bool:
            with _transaction(self.db):
                cursor = self.db.execute(
                    f"UPDATE turns SET rating = ?, feedback = ? WHERE conversation_id = ? AND {column} = ? "
                    "AND (? IS NULL OR conversation_id IN (SELECT id FROM conversations WHERE tenant = ?))",
                    (rating, self.sealer.seal_text(comment), conversation_id, key, tenant, tenant),
                )
            return cursor.rowcount > 0

        return await self._call(write)

    async def rate_conversation(self, conversation_id: str, *, rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate a whole conversation (1..5 stars); False when there is no such conversation."""
        if rating not in CONVERSATION_RATINGS:
            raise ValueError(f"a conversation rating is 1..5, not {rating!r}")

        def write() -> bool:
            with _transaction(self.db):
                cursor = self.db.execute("UPDATE conversations SET rating = ?, feedback = ? WHERE id = ? AND (? IS NULL OR tenant = ?)",
                                         (rating, self.sealer.seal_text(comment), conversation_id, tenant, tenant))
            return cursor.rowcount > 0

        return await self._call(write)

    # -- reading (REST API) --------------------------------------------------------------------
    async def list_conversations(self, limit: int, offset: int, tenant: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """A page of conversations, most recent first; only ``tenant``'s when given."""
        where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())

        def read() -> tuple[int, list[dict[str, Any]]]:
            total = self.db.execute(f"SELECT COUNT(*) FROM conversations {where}", args).fetchone()[0]
            rows = self.db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations {where} ORDER BY updated_at DESC LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
            return total, [self.sealer.open_conversation(dict(zip(_CONVERSATION_KEYS, row, strict=True))) for row in rows]

        return await self._call(read)

    async def get_conversation(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """One conversation with its turns and state; None when it is unknown or (given ``tenant``)
        belongs to another tenant, so a caller cannot tell the two apart."""

        def read() -> dict[str, Any] | None:
            row = self.db.execute(f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND (? IS NULL OR tenant = ?)",
                                  (conversation_id, tenant, tenant)).fetchone()
            if row is None:
                return None
            conversation = self.sealer.open_conversation(dict(zip(_CONVERSATION_KEYS, row, strict=True)))
            turns = self.db.execute(
                f"SELECT {', '.join(_TURN_KEYS)} FROM turns WHERE conversation_id = ? ORDER BY turn_index", (conversation_id,)
            ).fetchall()
            conversation["turns"] = [self.sealer.open_turn(dict(zip(_TURN_KEYS, t, strict=True))) for t in turns]
            state = self.db.execute("SELECT state FROM dialogue_state WHERE conversation_id = ?", (conversation_id,)).fetchone()
            conversation["state"] = self.sealer.open_json(state[0]) if state else None
            return conversation

        return await self._call(read)

    async def count_turns(self) -> int:
        return await self._call(lambda: self.db.execute("SELECT COUNT(*) FROM turns").fetchone()[0])

    async def integrity_ok(self) -> bool:
        return await self._call(lambda: self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    async def record_interruption(self, conversation_id: str, turn_id: str, delivered_text: str) -> bool:
        """A caller barged in: keep what they actually heard beside what the bot meant to say."""

        def write() -> bool:
            with _transaction(self.db):
                cursor = self.db.execute(
                    "UPDATE turns SET interrupted = 1, delivered_text = ? WHERE conversation_id = ? AND turn_id = ?",
                    (self.sealer.seal_text(delivered_text), conversation_id, turn_id),
                )
            return cursor.rowcount > 0

        return await self._call(write)


    # -- privacy: retention, erasure, audit, key rotation (voicebot.privacy) ----------------------
    async def delete_conversations_older_than(self, seconds: float, *, keep: Collection[str] = (), actor: str = "retention") -> int:
        """Delete conversations (turns, state) not updated for ``seconds``, except ``keep`` (live
        sessions), and profiles idle as long whose customer has no conversation left. Each batch is
        committed with its audit records (one per tenant, counts only). Returns conversations deleted."""
        cutoff = time.time() - seconds

        def write() -> int:
            deleted = 0
            while True:
                with _transaction(self.db):
                    batch = deletion.idle_conversations(self.db, cutoff, keep, limit=1000)
                    by_tenant: dict[str | None, list[str]] = {}
                    for conversation_id, tenant in batch:
                        by_tenant.setdefault(tenant, []).append(conversation_id)
                    for tenant, ids in by_tenant.items():
                        counts = deletion.delete_conversations(self.db, ids)
                        deleted += counts["conversations"]
                        write_audit_row(self.db, "retention_delete", actor, tenant,
                                        {**counts, "older_than_s": seconds, "cutoff": round(cutoff, 3)})
                    profiles = 0 if batch else deletion.delete_idle_profiles(self.db, cutoff)
                    if profiles:
                        write_audit_row(self.db, "retention_delete", actor, None, {"profiles": profiles, "older_than_s": seconds,
                                                                                 "cutoff": round(cutoff, 3)})
                if not batch:
                    break
            if deleted or profiles:
                deletion.wipe_freed_pages(self.db)
            return deleted

        return await self._call(write)

    async def erase_customer(self, user_id: str, tenant: str | None = None, *, actor: str = "api") -> dict[str, Any]:
        """Delete everything stored about one customer: their conversations (of ``tenant`` when
        given), turns, dialogue states and profile, with an audit record naming them only by a hash.
        Returns the counts, the audit record's id and whether the WAL was wiped at once."""

        def write() -> dict[str, Any]:
            with _transaction(self.db):
                ids = deletion.customer_conversations(self.db, user_id, tenant)
                counts: Counter[str] = Counter(conversations=0, turns=0, states=0)
                counts.update(deletion.delete_conversations(self.db, ids))
                counts["profiles"] = deletion.delete_profile(self.db, user_id, tenant)
                detail = {**counts, "subject": subject_ref(user_id), "conversation_ids": ids[:200]}
                audit_id = write_audit_row(self.db, "erase_customer", actor, tenant, detail)
            return {**counts, "audit_id": audit_id, "wiped": deletion.wipe_freed_pages(self.db)}

        return await self._call(write)

    async def write_audit(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any] | None = None) -> int:
        """Record an action (counts and ids only in ``detail``: free text is refused)."""

        def write() -> int:
            with _transaction(self.db):
                return write_audit_row(self.db, action, actor, tenant, detail or {})

        return await self._call(write)

    async def list_audit(self, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """A page of audit records, newest first: ``(total, items)``; ``tenant`` None: all of them.
        Items: ``{id, at, action, actor, tenant, detail}``."""
        return await self._call(list_audit_rows, self.db, tenant, limit, offset)

    async def rotate_encryption(self, *, actor: str = "cli") -> dict[str, int]:
        """Re-encrypt every stored value under the newest key (and encrypt legacy plaintext when
        encryption is on), so older keys can be retired; audited. Counts: reencrypted,
        encrypted, current (already under the newest key)."""

        def write() -> dict[str, int]:
            counts = rotate_all(self.db, self.sealer.cipher, self.sealer.encrypt, lambda: _transaction(self.db))
            result = {key: counts[key] for key in ("reencrypted", "encrypted", "current")}
            with _transaction(self.db):
                write_audit_row(self.db, "rotate_keys", actor, None, result)
            deletion.wipe_freed_pages(self.db)  # the WAL still holds values under the old key
            return result

        return await self._call(write)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database written by an older version up to the current columns (additive only)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


Storage = SqliteStorage  # the name callers used before the storage protocol (voicebot.storage.base)
