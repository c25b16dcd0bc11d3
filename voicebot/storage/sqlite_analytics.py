"""The SQL of the dashboard's aggregates and of the unanswered turns (shapes:
voicebot.storage.analytics). Counted in SQLite, percentiles included (nearest rank over window
functions): only the aggregates travel to Python, never the turns."""

from __future__ import annotations

import sqlite3
from typing import Any

from voicebot.storage.analytics import PERCENTILES, UNANSWERED_COLUMNS, AnalyticsQuery

# Turns of the period (and tenant) with their conversation; ``b`` is the turn's bucket.
_TURNS = """
    SELECT t.*, c.tenant AS tenant, CAST((t.created_at - :since) / :bucket AS INTEGER) AS b
    FROM turns t JOIN conversations c ON c.id = t.conversation_id
    WHERE t.created_at >= :since AND t.created_at < :until AND (:tenant IS NULL OR c.tenant = :tenant)
"""
_SESSIONS = """
    SELECT CAST((created_at - :since) / :bucket AS INTEGER) AS b, COUNT(*) FROM conversations
    WHERE created_at >= :since AND created_at < :until AND (:tenant IS NULL OR tenant = :tenant) GROUP BY b ORDER BY b
"""
_OUTCOMES = f"""
    WITH p AS ({_TURNS}), per AS (SELECT conversation_id, MAX(handoff_reason IS NOT NULL) AS handed FROM p GROUP BY conversation_id)
    SELECT COUNT(*), COALESCE(SUM(handed), 0) FROM per
"""
_RATINGS = f"""
    WITH p AS ({_TURNS}) SELECT c.rating, COUNT(*) FROM conversations c
    WHERE c.rating IS NOT NULL AND c.id IN (SELECT conversation_id FROM p) GROUP BY c.rating ORDER BY c.rating
"""
_percentile_columns = ", ".join(f"MIN(CASE WHEN n >= {p} * c THEN ms END)" for p in PERCENTILES)
_LATENCY = f"""
    WITH p AS ({_TURNS}),
    s AS (SELECT p.b AS b, j.key AS stage, CAST(j.value AS REAL) AS ms FROM p, json_each(p.timings) j WHERE p.timings IS NOT NULL),
    r AS (SELECT b, stage, ms, ROW_NUMBER() OVER w AS n, COUNT(*) OVER (PARTITION BY b, stage) AS c FROM s
          WINDOW w AS (PARTITION BY b, stage ORDER BY ms))
    SELECT b, stage, {_percentile_columns}, MAX(c) FROM r GROUP BY b, stage ORDER BY b, stage
"""


def _params(query: AnalyticsQuery) -> dict[str, Any]:
    return {"since": query.since, "until": query.until, "bucket": query.bucket_s, "tenant": query.tenant}


def analytics_rows(db: sqlite3.Connection, query: AnalyticsQuery) -> dict[str, list[tuple[Any, ...]]]:
    args = _params(query)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in db.execute(sql, args).fetchall()]

    return {
        "sessions": rows(_SESSIONS),
        "turns": rows(f"WITH p AS ({_TURNS}) SELECT b, COUNT(*) FROM p GROUP BY b ORDER BY b"),
        "languages": rows(f"WITH p AS ({_TURNS}) SELECT language, COUNT(*) FROM p GROUP BY language ORDER BY 2 DESC, 1"),
        "intents": rows(f"WITH p AS ({_TURNS}) SELECT intent, COUNT(*) FROM p GROUP BY intent ORDER BY 2 DESC, 1"),
        "outcomes": rows(_OUTCOMES),
        "handoffs": rows(f"WITH p AS ({_TURNS}) SELECT handoff_reason, COUNT(*) FROM p WHERE handoff_reason IS NOT NULL "
                         "GROUP BY handoff_reason ORDER BY 2 DESC, 1"),
        "ratings": rows(_RATINGS),
        "thumbs": rows(f"WITH p AS ({_TURNS}) SELECT rating, COUNT(*) FROM p WHERE rating IS NOT NULL GROUP BY rating ORDER BY rating"),
        "sentiment": rows(f"WITH p AS ({_TURNS}) SELECT b, AVG(sentiment), COUNT(sentiment) FROM p WHERE sentiment IS NOT NULL "
                          "GROUP BY b ORDER BY b"),
        "latency": rows(_LATENCY),
    }


def unanswered_rows(db: sqlite3.Connection, query: AnalyticsQuery, limit: int) -> list[dict[str, Any]]:
    """Newest first; ``user_text`` still sealed (the backend opens it)."""
    found = db.execute(
        f"WITH p AS ({_TURNS}) SELECT conversation_id, turn_index, user_text, language, intent, "
        "COALESCE(unanswered, 'rated_down'), rating, created_at, tenant FROM p "
        "WHERE unanswered IS NOT NULL OR rating = -1 ORDER BY created_at DESC LIMIT :limit",
        {**_params(query), "limit": limit},
    ).fetchall()
    return [dict(zip(UNANSWERED_COLUMNS, row, strict=True)) for row in found]
