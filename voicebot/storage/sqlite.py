"""SQLite storage: conversations, turns with their traces, dialogue state, user profiles, feedback.

The default backend of the storage contract (``voicebot.storage.base.Storage``). One connection
in WAL mode, used from one worker thread, so writes are serialised without lock contention and
the event loop never blocks on disk. A turn and the state after it are written in one
transaction: after a crash either both are there or neither is.

Customer feedback (a thumbs up/down per bot message, 1-5 stars per conversation, a comment) lives
on the rows it rates, so the export filters training examples with one join.

Conversation text is redacted and encrypted on its way in and decrypted on its way out
(``voicebot.privacy.sealing``). The SQL of tables, retention and erasure, the audit log, key
rotation and the export lives beside this module (``sqlite_*.py``); their rules in ``voicebot.privacy``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from voicebot.core.batching import Batcher, BatchItem
from voicebot.core.session import DialogueState
from voicebot.privacy import deletion
from voicebot.privacy.audit import audit_record
from voicebot.privacy.crypto import PREFIX
from voicebot.privacy.rotation import rotation_result
from voicebot.privacy.sealing import Sealer
from voicebot.storage import sqlite_deletion as sql_deletion
from voicebot.storage.base import ExportTurn, StoredTurn, check_conversation_rating, check_turn_rating, hash_token
from voicebot.storage.records import (
    CONVERSATION_COLUMNS,
    PROFILE_COLUMNS,
    TURN_COLUMNS,
    conversation_record,
    export_turn,
    profile_record,
    resume_record,
    seal_turn_writes,
    turn_record,
)
from voicebot.storage.sqlite_audit import insert_audit, list_audit_rows
from voicebot.storage.sqlite_export import PAGE_ROWS, connect_read_only, export_cursor
from voicebot.storage.sqlite_rotation import rotate_all
from voicebot.storage.sqlite_schema import connect, transaction


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

    async def open(self, *, create: bool = True) -> None:
        await self._call(self._open, create)

    def _open(self, create: bool) -> None:
        db = connect(self.path, create=create)
        try:
            self.sealer.verify(_newest_and_oldest_sealed_states(db))  # wrong key: a clear error at start
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
            with transaction(self.db):
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
            return None if row is None else resume_record(self.sealer, row)

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
        writes = seal_turn_writes(self.sealer, payloads)
        with transaction(self.db):
            for w in writes:
                self.db.execute(
                    "INSERT OR REPLACE INTO turns (conversation_id, turn_index, turn_id, user_text, bot_text, language, intent, path, trace, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (w.conversation_id, w.turn_index, w.turn_id, w.user_text, w.bot_text, w.language, w.intent, w.path, w.trace, w.at),
                )
                self.db.execute(
                    "UPDATE dialogue_state SET state = ?, updated_at = ? WHERE conversation_id = ?",
                    (w.state, w.at, w.conversation_id),
                )
                self.db.execute(
                    "UPDATE conversations SET language = ?, status = ?, turn_count = MAX(turn_count, ?), updated_at = ? WHERE id = ?",
                    (w.state_language, w.status, w.turn_index, w.at, w.conversation_id),
                )
                # A known customer's next conversation starts in the language they last used.
                self.db.execute(
                    "UPDATE user_profiles SET preferred_language = ?, updated_at = ? "
                    "WHERE user_id = (SELECT user_id FROM conversations WHERE id = ?)",
                    (w.state_language, w.at, w.conversation_id),
                )

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            row = self.db.execute(f"SELECT {PROFILE_COLUMNS} FROM user_profiles WHERE user_id = ?", (user_id,)).fetchone()
            return None if row is None else profile_record(self.sealer, row)

        return await self._call(read)

    async def end_conversation(self, conversation_id: str) -> None:
        def write() -> None:
            with transaction(self.db):
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
        check_turn_rating(rating, turn_index, turn_id)
        column, key = ("turn_index", turn_index) if turn_index is not None else ("turn_id", turn_id)

        def write() -> bool:
            with transaction(self.db):
                cursor = self.db.execute(
                    f"UPDATE turns SET rating = ?, feedback = ? WHERE conversation_id = ? AND {column} = ? "
                    "AND (? IS NULL OR conversation_id IN (SELECT id FROM conversations WHERE tenant = ?))",
                    (rating, self.sealer.seal_text(comment), conversation_id, key, tenant, tenant),
                )
            return cursor.rowcount > 0

        return await self._call(write)

    async def rate_conversation(self, conversation_id: str, *, rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate a whole conversation (1..5 stars); False when there is no such conversation."""
        check_conversation_rating(rating)

        def write() -> bool:
            with transaction(self.db):
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
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations {where} ORDER BY updated_at DESC LIMIT ? OFFSET ?", (*args, limit, offset)
            ).fetchall()
            return total, [conversation_record(self.sealer, row) for row in rows]

        return await self._call(read)

    async def get_conversation(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """One conversation with its turns and state; None when it is unknown or (given ``tenant``)
        belongs to another tenant, so a caller cannot tell the two apart."""

        def read() -> dict[str, Any] | None:
            row = self.db.execute(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND (? IS NULL OR tenant = ?)",
                                  (conversation_id, tenant, tenant)).fetchone()
            if row is None:
                return None
            conversation = conversation_record(self.sealer, row)
            turns = self.db.execute(
                f"SELECT {TURN_COLUMNS} FROM turns WHERE conversation_id = ? ORDER BY turn_index", (conversation_id,)
            ).fetchall()
            conversation["turns"] = [turn_record(self.sealer, t) for t in turns]
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
            with transaction(self.db):
                cursor = self.db.execute(
                    "UPDATE turns SET interrupted = 1, delivered_text = ? WHERE conversation_id = ? AND turn_id = ?",
                    (self.sealer.seal_text(delivered_text), conversation_id, turn_id),
                )
            return cursor.rowcount > 0

        return await self._call(write)


    # -- privacy: retention, erasure, audit, key rotation (rules: voicebot.privacy) ----------------
    async def delete_conversations_older_than(self, seconds: float, *, keep: Collection[str] = (), actor: str = "retention") -> int:
        """Delete conversations (turns, state) not updated for ``seconds``, except ``keep`` (live
        sessions), and profiles idle as long whose customer has no conversation left. Each batch is
        committed with its audit records (one per tenant, counts only). Returns conversations deleted."""
        cutoff = time.time() - seconds

        def write() -> int:
            deleted = profiles = 0
            while True:
                with transaction(self.db):
                    batch = sql_deletion.idle_conversations(self.db, cutoff, keep, limit=deletion.RETENTION_BATCH)
                    for tenant, ids in deletion.by_tenant(batch).items():
                        counts = sql_deletion.delete_conversations(self.db, ids)
                        deleted += counts["conversations"]
                        self._audit("retention_delete", actor, tenant, deletion.retention_detail(counts, seconds, cutoff))
                    profiles = 0 if batch else sql_deletion.delete_idle_profiles(self.db, cutoff)
                    if profiles:
                        self._audit("retention_delete", actor, None, deletion.retention_detail({"profiles": profiles}, seconds, cutoff))
                if not batch:
                    break
            if deleted or profiles:
                sql_deletion.wipe_freed_pages(self.db)
            return deleted

        return await self._call(write)

    async def erase_customer(self, user_id: str, tenant: str | None = None, *, actor: str = "api") -> dict[str, Any]:
        """Delete everything stored about one customer: their conversations (of ``tenant`` when
        given), turns, dialogue states and profile, with an audit record naming them only by a hash.
        Returns the counts, the audit record's id and whether the WAL was wiped at once."""

        def write() -> dict[str, Any]:
            with transaction(self.db):
                ids = sql_deletion.customer_conversations(self.db, user_id, tenant)
                counts: Counter[str] = Counter({key: 0 for key in deletion.DELETION_COUNTS})
                counts.update(sql_deletion.delete_conversations(self.db, ids))
                keep_profile = deletion.profile_survives_erasure(
                    tenant, sql_deletion.other_tenants_have_conversations(self.db, user_id, tenant))
                counts["profiles"] = 0 if keep_profile else sql_deletion.delete_profile(self.db, user_id)
                audit_id = self._audit("erase_customer", actor, tenant, deletion.erasure_detail(user_id, ids, counts))
            return {**counts, "audit_id": audit_id, "wiped": sql_deletion.wipe_freed_pages(self.db)}

        return await self._call(write)

    async def write_audit(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any] | None = None) -> int:
        """Record an action (counts and ids only in ``detail``: free text is refused)."""

        def write() -> int:
            with transaction(self.db):
                return self._audit(action, actor, tenant, detail or {})

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
            result = rotation_result(rotate_all(self.db, self.sealer.cipher, self.sealer.encrypt, lambda: transaction(self.db)))
            with transaction(self.db):
                self._audit("rotate_keys", actor, None, result)
            sql_deletion.wipe_freed_pages(self.db)  # the WAL still holds values under the old key
            return result

        return await self._call(write)

    def _audit(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any]) -> int:
        """Inside the caller's transaction: the record commits with what it records."""
        return insert_audit(self.db, audit_record(action, actor, tenant, detail))

    # -- the training-set export ----------------------------------------------------------------
    async def export_turns(self) -> AsyncIterator[ExportTurn]:
        """Every bot turn with its ratings, in clear, a page at a time from a read-only connection
        of its own (an export beside a running server blocks none of its writes)."""
        reader = await self._call(connect_read_only, self.path)
        try:
            cursor = await self._call(export_cursor, reader)
            while page := await self._call(self._export_page, cursor):
                for turn in page:
                    yield turn
        finally:
            await self._call(reader.close)

    def _export_page(self, cursor: sqlite3.Cursor) -> list[ExportTurn]:
        return [export_turn(self.sealer, row) for row in cursor.fetchmany(PAGE_ROWS)]


def _newest_and_oldest_sealed_states(db: sqlite3.Connection) -> list[str]:
    """What ``Sealer.verify`` tries the keys on: two encrypted dialogue states, not all of them."""
    found = []
    for order in ("DESC", "ASC"):
        row = db.execute(f"SELECT state FROM dialogue_state WHERE substr(state, 1, ?) = ? ORDER BY rowid {order} LIMIT 1",
                         (len(PREFIX), PREFIX)).fetchone()
        if row:
            found.append(row[0])
    return found
