"""The SQL of the dashboard's aggregates and of the unanswered turns (shapes:
voicebot.storage.analytics). Counted in SQLite; only the latency percentiles are ranked in numpy
from the timings' numbers (no text leaves the database for them)."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

import numpy as np

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
# The stage timings of the period's turns, one row per (turn, stage). SQLite has no percentile
# function; nearest-rank percentiles over window functions took 1.6 s for 120 000 timings
# (bench/analytics_bench.py), reading the numbers and ranking them with numpy takes a tenth.
_TIMINGS = """
    SELECT CAST((t.created_at - :since) / :bucket AS INTEGER) AS b, j.key AS stage, CAST(j.value AS REAL) AS ms
    FROM turns t JOIN conversations c ON c.id = t.conversation_id, json_each(t.timings) j
    WHERE t.created_at >= :since AND t.created_at < :until AND (:tenant IS NULL OR c.tenant = :tenant) AND t.timings IS NOT NULL
"""


def latency_rows(db: sqlite3.Connection, args: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``(bucket, stage, p50, p95, p99, n)`` by nearest rank, like ``analytics.nearest_rank``."""
    found = db.execute(_TIMINGS, args).fetchall()
    if not found:
        return []
    buckets = np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))
    names = sorted({row[1] for row in found})
    index = {name: i for i, name in enumerate(names)}
    stages = np.fromiter((index[row[1]] for row in found), dtype=np.int64, count=len(found))
    values = np.fromiter((row[2] for row in found), dtype=np.float64, count=len(found))
    order = np.lexsort((values, stages, buckets))
    buckets, stages, values = buckets[order], stages[order], values[order]
    starts = np.flatnonzero(np.r_[True, (buckets[1:] != buckets[:-1]) | (stages[1:] != stages[:-1])])
    ends = np.r_[starts[1:], len(values)]
    rows = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        count = end - start
        ranks = [start + max(0, math.ceil(p * count) - 1) for p in PERCENTILES]
        rows.append((int(buckets[start]), names[stages[start]], *(float(values[r]) for r in ranks), count))
    return rows


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
        "latency": latency_rows(db, args),
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
