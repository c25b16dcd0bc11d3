"""The SQL of the dashboard's aggregates and of the unanswered turns on PostgreSQL (shapes:
voicebot.storage.analytics), row for row what voicebot.storage.sqlite_analytics returns.

Everything is counted in the server, the latency percentiles too (``percentile_disc`` is the
nearest rank, ``analytics.nearest_rank``). What keeps the two backends' rows equal:

- buckets truncate ``(created_at - since) / bucket`` as SQLite's ``CAST(... AS INTEGER)`` does;
- names sort by code point (``COLLATE "C"``, SQLite's BINARY; the database's own collation may be
  a locale's) and a missing intent sorts first, as NULL does in SQLite;
- the parameters are typed (``::float8``, ``::text``) so an int ``since`` or a None tenant means
  what it means in SQLite.
"""

from __future__ import annotations

from typing import Any

import psycopg

from voicebot.storage.analytics import PERCENTILES, UNANSWERED_COLUMNS, AnalyticsQuery

_BUCKET = "trunc(({column} - %(since)s::float8) / %(bucket)s::float8)::bigint"
_PERIOD = "{column} >= %(since)s::float8 AND {column} < %(until)s::float8 AND (%(tenant)s::text IS NULL OR {tenant} = %(tenant)s::text)"
# Turns of the period (and tenant) with their conversation's tenant; ``b`` is the turn's bucket.
_TURNS = f"""
    SELECT t.*, c.tenant AS tenant, {_BUCKET.format(column="t.created_at")} AS b
    FROM turns t JOIN conversations c ON c.id = t.conversation_id
    WHERE {_PERIOD.format(column="t.created_at", tenant="c.tenant")}
"""
_SESSIONS = f"""
    SELECT {_BUCKET.format(column="created_at")} AS b, COUNT(*) FROM conversations
    WHERE {_PERIOD.format(column="created_at", tenant="tenant")} GROUP BY b ORDER BY b
"""
_OUTCOMES = f"""
    WITH p AS ({_TURNS}), per AS (SELECT conversation_id, bool_or(handoff_reason IS NOT NULL) AS handed FROM p GROUP BY conversation_id)
    SELECT COUNT(*), COUNT(*) FILTER (WHERE handed) FROM per
"""
_RATINGS = f"""
    WITH p AS ({_TURNS}) SELECT c.rating, COUNT(*) FROM conversations c
    WHERE c.rating IS NOT NULL AND c.id IN (SELECT conversation_id FROM p) GROUP BY c.rating ORDER BY c.rating
"""
# One row per (bucket, stage): the nearest-rank percentiles of the stage's timings, in the server.
_LATENCY = f"""
    WITH p AS ({_TURNS}), timing AS (
        SELECT p.b, j.key COLLATE "C" AS stage, j.value::float8 AS ms FROM p, jsonb_each_text(p.timings) j WHERE p.timings IS NOT NULL)
    SELECT b, stage, percentile_disc(%(percentiles)s::float8[]) WITHIN GROUP (ORDER BY ms), COUNT(*)
    FROM timing GROUP BY b, stage ORDER BY b, stage
"""
_ANALYTICS = {
    "sessions": _SESSIONS,
    "turns": f"WITH p AS ({_TURNS}) SELECT b, COUNT(*) FROM p GROUP BY b ORDER BY b",
    "languages": f'WITH p AS ({_TURNS}) SELECT language, COUNT(*) FROM p GROUP BY language ORDER BY 2 DESC, language COLLATE "C"',
    "intents": f'WITH p AS ({_TURNS}) SELECT intent, COUNT(*) FROM p GROUP BY intent ORDER BY 2 DESC, intent COLLATE "C" NULLS FIRST',
    "outcomes": _OUTCOMES,
    "handoffs": f"WITH p AS ({_TURNS}) SELECT handoff_reason, COUNT(*) FROM p WHERE handoff_reason IS NOT NULL "
                'GROUP BY handoff_reason ORDER BY 2 DESC, handoff_reason COLLATE "C"',
    "ratings": _RATINGS,
    "thumbs": f"WITH p AS ({_TURNS}) SELECT rating, COUNT(*) FROM p WHERE rating IS NOT NULL GROUP BY rating ORDER BY rating",
    "sentiment": f"WITH p AS ({_TURNS}) SELECT b, AVG(sentiment), COUNT(sentiment) FROM p WHERE sentiment IS NOT NULL GROUP BY b ORDER BY b",
}
_UNANSWERED = f"""
    WITH p AS ({_TURNS}) SELECT conversation_id, turn_index, user_text, language, intent, COALESCE(unanswered, 'rated_down'), rating,
    created_at, tenant FROM p WHERE unanswered IS NOT NULL OR rating = -1 ORDER BY created_at DESC LIMIT %(limit)s
"""


def _params(query: AnalyticsQuery) -> dict[str, Any]:
    return {"since": query.since, "until": query.until, "bucket": query.bucket_s, "tenant": query.tenant}


async def analytics_rows(conn: psycopg.AsyncConnection, query: AnalyticsQuery) -> dict[str, list[tuple[Any, ...]]]:
    """Every key of ``analytics.ANALYTICS_KEYS``; run in one snapshot by the caller, so they agree."""
    args = {**_params(query), "percentiles": list(PERCENTILES)}
    found: dict[str, list[tuple[Any, ...]]] = {}
    for key, sql in _ANALYTICS.items():
        found[key] = [tuple(row) for row in await (await conn.execute(sql, args)).fetchall()]
    latency = await (await conn.execute(_LATENCY, args)).fetchall()
    found["latency"] = [(bucket, stage, *(float(ms) for ms in ranks), count) for bucket, stage, ranks, count in latency]
    return found


async def unanswered_rows(conn: psycopg.AsyncConnection, query: AnalyticsQuery, limit: int) -> list[dict[str, Any]]:
    """Newest first; ``user_text`` still sealed (the backend opens it)."""
    rows = await (await conn.execute(_UNANSWERED, {**_params(query), "limit": limit})).fetchall()
    return [dict(zip(UNANSWERED_COLUMNS, row, strict=True)) for row in rows]
