"""PostgreSQL storage: the storage contract (``voicebot.storage.base.Storage``) for many workers.

``[storage] backend = "postgres"`` with ``url = "postgresql://user:password@host:5432/db"``
(``VOICEBOT_STORAGE__BACKEND``, ``VOICEBOT_STORAGE__URL``). Any number of voicebot processes on
any number of machines share one database: state is saved after every turn, so any of them can
resume any conversation.

- psycopg 3 with an ``AsyncConnectionPool``: nothing blocks the event loop; a connection is
  checked before it is handed out, so one cut by a PostgreSQL restart is replaced, not used.
- The schema is versioned (``postgres_schema``): pending migrations are applied at ``open``,
  under an advisory lock, so workers starting together migrate once.
- Turns of concurrent sessions are committed together (group commit through the same ``Batcher``
  as SQLite); a turn and the state after it are in one transaction.
- Lost connections, restarts and deadlocks are retried for ``retry_for_s`` on idempotent
  operations (``postgres_retry``), then fail the one call: a turn gets ``storage_failed``, never a
  hang.
- The same tables as SQLite and the same sealing and row shapes (``records``): redaction and
  encryption happen here, before anything is sent to the server, so PostgreSQL, its WAL, its
  backups and its replicas never hold a customer's text in clear when encryption is on.

Settings, pool sizing and failure behaviour: docs/storage.md.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from voicebot.config import ConfigError
from voicebot.core.batching import Batcher, BatchItem
from voicebot.core.session import DialogueState
from voicebot.privacy import deletion
from voicebot.privacy.audit import audit_record
from voicebot.privacy.crypto import PREFIX
from voicebot.privacy.rotation import rotation_result
from voicebot.privacy.sealing import Sealer
from voicebot.storage import postgres_deletion as sql_deletion
from voicebot.storage.analytics import AnalyticsQuery
from voicebot.storage.base import ExportTurn, StoredTurn, check_conversation_rating, check_turn_rating, hash_token
from voicebot.storage.postgres_analytics import analytics_rows, unanswered_rows
from voicebot.storage.postgres_audit import insert_audit, list_audit_rows
from voicebot.storage.postgres_retry import is_transient, retry_transient
from voicebot.storage.postgres_rotation import rotate_all
from voicebot.storage.postgres_schema import LATEST_VERSION, migrate, schema_exists, schema_version
from voicebot.storage.records import (
    CONVERSATION_COLUMNS,
    EXPORT_SQL,
    PROFILE_COLUMNS,
    TURN_COLUMNS,
    SealedTurnWrite,
    conversation_record,
    export_turn,
    profile_record,
    resume_record,
    seal_turn_writes,
    turn_record,
)

T = TypeVar("T")
EXPORT_PAGE_ROWS = 500
TurnPayload = tuple[StoredTurn, dict[str, Any], str]


class StorageUnavailableError(ConfigError):
    """PostgreSQL cannot be reached at start: the operator's problem, named with the setting."""


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a connection URL, without its password (for messages and logs)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparseable storage.url"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


class PostgresStorage:
    """``[storage] backend = "postgres"``: one database shared by every worker."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        url: SecretStr = Field(description="postgresql://user:password@host:port/dbname (libpq URL or key=value string)")
        pool_min: int = Field(1, ge=0, description="connections kept open per worker")
        pool_max: int = Field(10, ge=1, description="connections a worker may open at most; the sum over workers must stay "
                                                  "below the server's max_connections")
        connect_timeout_s: float = Field(3.0, gt=0, description="one connection attempt (and a wait for a free pooled one)")
        statement_timeout_s: float = Field(5.0, gt=0, description="the server cancels a statement running longer")
        retry_for_s: float = Field(6.0, ge=0, description="how long a turn's save is retried through lost connections and restarts "
                                                         "before the client gets storage_failed; keep retry_for_s + the larger timeout "
                                                         "below pipeline.turn_timeout_s")
        start_timeout_s: float = Field(30.0, gt=0, description="at start, how long to wait for PostgreSQL to accept connections")

    @classmethod
    def from_options(cls, options: PostgresStorage.Options, *, sealer: Sealer | None = None, **_: Any) -> PostgresStorage:
        return cls(options.url.get_secret_value(), sealer, options=options)

    def __init__(self, url: str, sealer: Sealer | None = None, *, options: PostgresStorage.Options | None = None) -> None:
        self.url = url
        self.options = options or PostgresStorage.Options(url=SecretStr(url))
        # Redaction and encryption of stored text (voicebot.privacy.sealing); none by default.
        self.sealer = sealer or Sealer()
        self._pool: AsyncConnectionPool | None = None
        self._turn_batcher: Batcher[TurnPayload, None] = Batcher(self._write_turn_batch, max_batch=128, max_wait_s=0.0, name="storage")
        # Held while a batch of turns is written: close() waits for it, so a turn being committed is not cut off.
        self._writing = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStorage({describe_url(self.url)})"

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return self._pool

    async def _retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await retry_transient(operation, self.options.retry_for_s)

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        options = self.options
        pool = AsyncConnectionPool(
            self.url, min_size=options.pool_min, max_size=options.pool_max, open=False, name="voicebot-storage",
            timeout=options.connect_timeout_s, check=AsyncConnectionPool.check_connection,
            # The pool's own reconnection backs off exponentially (1, 2, 4... s): after a long outage it could wait that
            # long once PostgreSQL is back. Giving up after retry_for_s makes the next request start a fresh attempt at once.
            reconnect_timeout=max(options.retry_for_s, 1.0),
            kwargs={"connect_timeout": max(1, round(options.connect_timeout_s)), "application_name": "voicebot",
                    "options": f"-c statement_timeout={round(options.statement_timeout_s * 1000)}"},
        )
        try:
            await pool.open(wait=options.pool_min > 0, timeout=options.start_timeout_s)
            async with pool.connection(timeout=options.start_timeout_s) as conn:
                if not create and not await schema_exists(conn):
                    raise FileNotFoundError(f"no voicebot tables in the PostgreSQL database {describe_url(self.url)} "
                                            "(storage.url): `voicebot serve` creates them")
                await migrate(conn)
                self.sealer.verify(await _newest_and_oldest_sealed_states(conn))  # wrong key: a clear error at start
        except psycopg.OperationalError as exc:  # the pool's timeout too
            await pool.close()
            reason = await _connection_error(self.url, options.connect_timeout_s) or f"{type(exc).__name__}: {exc}"
            raise StorageUnavailableError(f"storage.url: cannot use PostgreSQL at {describe_url(self.url)} ({reason})") from None
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        """The batch being committed finishes first (its callers are told it is stored); turns
        still queued behind it fail with "storage closed", as with SQLite."""
        async with self._writing:
            await self._turn_batcher.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- conversations -------------------------------------------------------------------------
    async def create_conversation(self, conversation_id: str, token: str, channel: str, language: str, user_id: str | None, state: DialogueState,
                                  tenant: str = "default") -> None:
        token_hash = hash_token(token)
        sealed_state = await asyncio.to_thread(self.sealer.seal_json, state.to_dict())

        async def write() -> None:
            now = time.time()
            async with self.pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    "INSERT INTO conversations (id, tenant, token_hash, channel, user_id, language, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                    (conversation_id, tenant, token_hash, channel, user_id, language, now, now),
                )
                if await cursor.fetchone() is None:
                    # Already there: our own earlier attempt whose commit was cut (a retry), or an id in use.
                    cursor = await conn.execute("SELECT token_hash FROM conversations WHERE id = %s", (conversation_id,))
                    row = await cursor.fetchone()
                    if row is None or row[0] != token_hash:
                        raise ValueError(f"conversation {conversation_id!r} already exists")
                    return
                await conn.execute("INSERT INTO dialogue_state (conversation_id, state, updated_at) VALUES (%s, %s, %s)",
                                   (conversation_id, sealed_state, now))
                if user_id:
                    await conn.execute(
                        "INSERT INTO user_profiles (user_id, preferred_language, created_at, updated_at) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at",
                        (user_id, language, now, now),
                    )

        await self._retry(write)

    async def resume(self, token: str) -> tuple[dict[str, Any], DialogueState] | None:
        """The conversation and its last saved state for a resume token, or None."""

        async def read() -> Sequence[Any] | None:
            async with self.pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT c.id, c.channel, c.user_id, c.language, c.status, c.turn_count, c.tenant, s.state FROM conversations c "
                    "JOIN dialogue_state s ON s.conversation_id = c.id WHERE c.token_hash = %s",
                    (hash_token(token),),
                )
                return await cursor.fetchone()

        row = await self._retry(read)
        return None if row is None else await asyncio.to_thread(resume_record, self.sealer, row)

    async def save_turn(self, turn: StoredTurn, state: DialogueState, status: str) -> None:
        """Store a turn and the state after it atomically; group-committed with the turns of
        other sessions saved at the same moment (a batch that fails on its data is split, so only
        the turn at fault gets the error; one that fails on the connection fails as a whole,
        after the retries)."""
        await self._turn_batcher.submit((turn, state.to_dict(), status))

    async def _write_turn_batch(self, items: Sequence[BatchItem[TurnPayload]]) -> list[None | BaseException]:
        writes = await asyncio.to_thread(seal_turn_writes, self.sealer, [item.payload for item in items])
        try:
            async with self._writing:
                await self._retry(lambda: self._write_turns(writes))
        except Exception as exc:
            if is_transient(exc):  # the server is away: every turn of the batch fails now, none is tried alone again
                return [exc] * len(items)
            raise
        return [None] * len(items)

    async def _write_turns(self, writes: list[SealedTurnWrite]) -> None:
        # One conversation's rows always in the same order (sorted, stable), so two workers'
        # batches cannot deadlock on each other; a conversation's later turn stays after its earlier one.
        writes = sorted(writes, key=lambda w: w.conversation_id)
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction(), conn.cursor() as cursor:
            # Saving the same index again replaces the turn, ratings and interruption included (as SQLite's INSERT OR REPLACE).
            await cursor.executemany(
                "INSERT INTO turns (conversation_id, turn_index, turn_id, user_text, bot_text, language, intent, path, trace, created_at, "
                "handoff_reason, unanswered, sentiment, timings) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (conversation_id, turn_index) DO UPDATE SET "
                "turn_id = excluded.turn_id, user_text = excluded.user_text, bot_text = excluded.bot_text, language = excluded.language, "
                "intent = excluded.intent, path = excluded.path, trace = excluded.trace, created_at = excluded.created_at, "
                "handoff_reason = excluded.handoff_reason, unanswered = excluded.unanswered, sentiment = excluded.sentiment, "
                "timings = excluded.timings, rating = NULL, feedback = NULL, interrupted = 0, delivered_text = NULL",
                [(w.conversation_id, w.turn_index, w.turn_id, w.user_text, w.bot_text, w.language, w.intent, w.path, w.trace, w.at,
                  w.facts.handoff_reason, w.facts.unanswered, w.facts.sentiment, w.facts.timings) for w in writes],
            )
            await cursor.executemany("UPDATE dialogue_state SET state = %s, updated_at = %s WHERE conversation_id = %s",
                                     [(w.state, w.at, w.conversation_id) for w in writes])
            await cursor.executemany(
                "UPDATE conversations SET language = %s, status = %s, turn_count = GREATEST(turn_count, %s), updated_at = %s WHERE id = %s",
                [(w.state_language, w.status, w.turn_index, w.at, w.conversation_id) for w in writes],
            )
            # A known customer's next conversation starts in the language they last used.
            await cursor.executemany(
                "UPDATE user_profiles SET preferred_language = %s, updated_at = %s "
                "WHERE user_id = (SELECT user_id FROM conversations WHERE id = %s)",
                [(w.state_language, w.at, w.conversation_id) for w in writes],
            )

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        row = await self._fetch_one(f"SELECT {PROFILE_COLUMNS} FROM user_profiles WHERE user_id = %s", (user_id,))
        return None if row is None else profile_record(self.sealer, row)

    async def end_conversation(self, conversation_id: str) -> None:
        await self._update("UPDATE conversations SET status = CASE WHEN status IN ('handed_off', 'callback') THEN status ELSE 'ended' END, "
                           "updated_at = %s WHERE id = %s", (time.time(), conversation_id))

    async def record_interruption(self, conversation_id: str, turn_id: str, delivered_text: str) -> bool:
        """A caller barged in: keep what they actually heard beside what the bot meant to say."""
        return await self._update("UPDATE turns SET interrupted = 1, delivered_text = %s WHERE conversation_id = %s AND turn_id = %s",
                                  (self.sealer.seal_text(delivered_text), conversation_id, turn_id)) > 0

    # -- feedback -------------------------------------------------------------------------------
    async def rate_turn(self, conversation_id: str, *, turn_index: int | None = None, turn_id: str | None = None,
                        rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate one bot message (-1 or 1), found by its index or by its live turn id; False when
        there is no such turn. A new rating replaces the previous one and its comment."""
        check_turn_rating(rating, turn_index, turn_id)
        column, key = ("turn_index", turn_index) if turn_index is not None else ("turn_id", turn_id)
        return await self._update(
            f"UPDATE turns SET rating = %s, feedback = %s WHERE conversation_id = %s AND {column} = %s "
            "AND (%s::text IS NULL OR conversation_id IN (SELECT id FROM conversations WHERE tenant = %s))",
            (rating, self.sealer.seal_text(comment), conversation_id, key, tenant, tenant),
        ) > 0

    async def rate_conversation(self, conversation_id: str, *, rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate a whole conversation (1..5 stars); False when there is no such conversation."""
        check_conversation_rating(rating)
        return await self._update("UPDATE conversations SET rating = %s, feedback = %s WHERE id = %s AND (%s::text IS NULL OR tenant = %s)",
                                  (rating, self.sealer.seal_text(comment), conversation_id, tenant, tenant)) > 0

    # -- reading (REST API) --------------------------------------------------------------------
    async def list_conversations(self, limit: int, offset: int, tenant: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """A page of conversations, most recent first; only ``tenant``'s when given."""
        where, args = ("WHERE tenant = %s", (tenant,)) if tenant is not None else ("", ())

        async def read() -> tuple[int, list[Any]]:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # the count and the page agree
                total = await (await conn.execute(f"SELECT COUNT(*) FROM conversations {where}", args)).fetchone()
                cursor = await conn.execute(f"SELECT {CONVERSATION_COLUMNS} FROM conversations {where} ORDER BY updated_at DESC "
                                            "LIMIT %s OFFSET %s", (*args, limit, offset))
                return int(total[0] if total else 0), await cursor.fetchall()

        total, rows = await self._retry(read)
        return total, await asyncio.to_thread(lambda: [conversation_record(self.sealer, row) for row in rows])

    async def get_conversation(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """One conversation with its turns and state; None when it is unknown or (given ``tenant``)
        belongs to another tenant, so a caller cannot tell the two apart."""

        async def read() -> tuple[Any, list[Any], Any] | None:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # turns and state of one moment
                row = await (await conn.execute(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s "
                                                "AND (%s::text IS NULL OR tenant = %s)", (conversation_id, tenant, tenant))).fetchone()
                if row is None:
                    return None
                turns = await (await conn.execute(f"SELECT {TURN_COLUMNS} FROM turns WHERE conversation_id = %s ORDER BY turn_index",
                                                  (conversation_id,))).fetchall()
                state = await (await conn.execute("SELECT state FROM dialogue_state WHERE conversation_id = %s", (conversation_id,))).fetchone()
                return row, turns, state

        found = await self._retry(read)
        if found is None:
            return None

        def opened() -> dict[str, Any]:
            row, turns, state = found
            conversation = conversation_record(self.sealer, row)
            conversation["turns"] = [turn_record(self.sealer, turn) for turn in turns]
            conversation["state"] = self.sealer.open_json(state[0]) if state else None
            return conversation

        return await asyncio.to_thread(opened)

    # -- the agents' queue (voicebot.agents) --------------------------------------------------------
    async def set_status(self, conversation_id: str, status: str, tenant: str | None = None) -> bool:
        """Set a conversation's status (agents: ``callback``, ``closed``, ``active``); False when unknown."""
        return await self._update("UPDATE conversations SET status = %s, updated_at = %s WHERE id = %s AND (%s::text IS NULL OR tenant = %s)",
                                  (status, time.time(), conversation_id, tenant, tenant)) > 0

    async def list_by_status(self, statuses: Collection[str], tenant: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Conversations whose status is one of ``statuses``, most recently updated first."""
        wanted = list(statuses)
        if not wanted:
            return []
        return await self._conversation_list(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status = ANY(%s::text[]) "
                                         "AND (%s::text IS NULL OR tenant = %s) ORDER BY updated_at DESC LIMIT %s",
                                         (wanted, tenant, tenant, limit))

    async def list_customer_conversations(self, user_id: str, tenant: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """One customer's conversations, newest first (the console's customer view)."""
        return await self._conversation_list(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = %s "
                                         "AND (%s::text IS NULL OR tenant = %s) ORDER BY created_at DESC LIMIT %s",
                                         (user_id, tenant, tenant, limit))

    async def _conversation_list(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        async def read() -> list[Any]:
            async with self.pool.connection() as conn:
                return await (await conn.execute(sql, args)).fetchall()

        rows = await self._retry(read)
        return await asyncio.to_thread(lambda: [conversation_record(self.sealer, row) for row in rows])

    # -- the dashboard and the insights ------------------------------------------------------------
    async def analytics(self, query: AnalyticsQuery) -> dict[str, list[tuple[Any, ...]]]:
        """The dashboard's aggregates, counted in SQL (voicebot.storage.postgres_analytics), all
        of one snapshot so the keys agree with each other."""

        async def read() -> dict[str, list[tuple[Any, ...]]]:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return await analytics_rows(conn, query)

        return await self._retry(read)

    async def unanswered_turns(self, query: AnalyticsQuery, limit: int) -> list[dict[str, Any]]:
        """Turns the bot could not answer or that were rated down, newest first, text as stored (redacted)."""

        async def read() -> list[dict[str, Any]]:
            async with self.pool.connection() as conn:
                return await unanswered_rows(conn, query, limit)

        rows = await self._retry(read)

        def opened() -> list[dict[str, Any]]:
            for row in rows:
                row["user_text"] = self.sealer.open(row["user_text"]) or ""
            return rows

        return await asyncio.to_thread(opened)

    async def count_turns(self) -> int:
        row = await self._fetch_one("SELECT COUNT(*) FROM turns", ())
        return int(row[0]) if row else 0

    async def integrity_ok(self) -> bool:
        """The schema is at this version's migrations and every conversation has its dialogue
        state (written in the same transaction): what a fault must not break."""

        async def check() -> bool:
            async with self.pool.connection() as conn:
                if await schema_version(conn) < LATEST_VERSION:
                    return False
                cursor = await conn.execute("SELECT NOT EXISTS (SELECT 1 FROM conversations c LEFT JOIN dialogue_state s "
                                            "ON s.conversation_id = c.id WHERE s.conversation_id IS NULL)")
                row = await cursor.fetchone()
                return bool(row and row[0])

        return await self._retry(check)

    async def _fetch_one(self, sql: str, args: Sequence[Any]) -> Any:
        async def read() -> Any:
            async with self.pool.connection() as conn:
                return await (await conn.execute(sql, args)).fetchone()

        return await self._retry(read)

    async def _update(self, sql: str, args: Sequence[Any]) -> int:
        """One idempotent statement in its own transaction (retried); the rows it changed."""

        async def write() -> int:
            async with self.pool.connection() as conn, conn.transaction():
                return max((await conn.execute(sql, args)).rowcount, 0)

        return await self._retry(write)

    # -- privacy: retention, erasure, audit, key rotation (rules: voicebot.privacy) ----------------
    async def delete_conversations_older_than(self, seconds: float, *, keep: Collection[str] = (), actor: str = "retention") -> int:
        """Delete conversations (turns, state) not updated for ``seconds``, except ``keep`` (live
        sessions), and profiles idle as long whose customer has no conversation left. Each batch is
        committed with its audit records (one per tenant, counts only). Returns conversations deleted."""
        cutoff = time.time() - seconds
        deleted = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                batch = await sql_deletion.idle_conversations(conn, cutoff, keep, limit=deletion.RETENTION_BATCH)
                for tenant, ids in deletion.by_tenant(batch).items():
                    counts = await sql_deletion.delete_conversations(conn, ids)
                    deleted += counts["conversations"]
                    await self._audit(conn, "retention_delete", actor, tenant, deletion.retention_detail(counts, seconds, cutoff))
                profiles = 0 if batch else await sql_deletion.delete_idle_profiles(conn, cutoff)
                if profiles:
                    await self._audit(conn, "retention_delete", actor, None, deletion.retention_detail({"profiles": profiles}, seconds, cutoff))
            if not batch:
                return deleted

    async def erase_customer(self, user_id: str, tenant: str | None = None, *, actor: str = "api") -> dict[str, Any]:
        """Delete everything stored about one customer: their conversations (of ``tenant`` when
        given), turns, dialogue states and profile, with an audit record naming them only by a hash.
        ``wiped`` is False: PostgreSQL frees the rows' space later and keeps them in its WAL for a
        while (encryption at rest protects those copies; docs/storage.md)."""
        async with self.pool.connection() as conn, conn.transaction():
            ids = await sql_deletion.customer_conversations(conn, user_id, tenant)
            counts: Counter[str] = Counter({key: 0 for key in deletion.DELETION_COUNTS})
            counts.update(await sql_deletion.delete_conversations(conn, ids))
            keep_profile = deletion.profile_survives_erasure(tenant, await sql_deletion.other_tenants_have_conversations(conn, user_id, tenant))
            counts["profiles"] = 0 if keep_profile else await sql_deletion.delete_profile(conn, user_id)
            audit_id = await self._audit(conn, "erase_customer", actor, tenant, deletion.erasure_detail(user_id, ids, counts))
        return {**counts, "audit_id": audit_id, "wiped": False}

    async def write_audit(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any] | None = None) -> int:
        """Record an action (counts and ids only in ``detail``: free text is refused)."""
        record = audit_record(action, actor, tenant, detail or {})
        async with self.pool.connection() as conn, conn.transaction():
            return await insert_audit(conn, record)

    async def list_audit(self, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """A page of audit records, newest first: ``(total, items)``; ``tenant`` None: all of them.
        Items: ``{id, at, action, actor, tenant, detail}``."""

        async def read() -> tuple[int, list[dict[str, Any]]]:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return await list_audit_rows(conn, tenant, limit, offset)

        return await self._retry(read)

    async def rotate_encryption(self, *, actor: str = "cli") -> dict[str, int]:
        """Re-encrypt every stored value under the newest key (and encrypt legacy plaintext when
        encryption is on), so older keys can be retired; audited. Counts: reencrypted,
        encrypted, current (already under the newest key)."""
        result = rotation_result(await rotate_all(self.pool, self.sealer.cipher, self.sealer.encrypt, self._retry))
        await self.write_audit("rotate_keys", actor, None, result)
        return result

    async def _audit(self, conn: psycopg.AsyncConnection, action: str, actor: str, tenant: str | None, detail: dict[str, Any]) -> int:
        """Inside the caller's transaction: the record commits with what it records."""
        return await insert_audit(conn, audit_record(action, actor, tenant, detail))

    # -- the training-set export ----------------------------------------------------------------
    async def export_turns(self) -> AsyncIterator[ExportTurn]:
        """Every bot turn with its ratings, in clear, a page at a time through a server-side
        cursor in one snapshot (MVCC: an export beside a running server blocks none of its writes)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            async with conn.cursor(name="voicebot_export") as cursor:
                await cursor.execute(EXPORT_SQL)
                while rows := await cursor.fetchmany(EXPORT_PAGE_ROWS):
                    for turn in await asyncio.to_thread(lambda rows=rows: [export_turn(self.sealer, row) for row in rows]):
                        yield turn


async def _connection_error(url: str, timeout_s: float) -> str | None:
    """Why a connection to ``url`` fails, in libpq's words (the pool's own timeout says only that it waited)."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, round(timeout_s)))
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    await conn.close()
    return None


async def _newest_and_oldest_sealed_states(conn: psycopg.AsyncConnection) -> list[str]:
    """What ``Sealer.verify`` tries the keys on: two encrypted dialogue states, not all of them."""
    found = []
    for order in ("DESC", "ASC"):
        cursor = await conn.execute(f"SELECT state FROM dialogue_state WHERE left(state, %s) = %s ORDER BY updated_at {order} LIMIT 1",
                                    (len(PREFIX), PREFIX))
        row = await cursor.fetchone()
        if row:
            found.append(row[0])
    return found

