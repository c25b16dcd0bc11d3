"""What the dashboard and the insights read from stored turns, and the few facts of a turn that
every backend keeps beside its (sealed) trace so they can be counted with SQL: the hand-off
reason, why the turn went unanswered, the sentiment score and the stage timings. None of them is
conversation text (codes and numbers), so they are stored in clear like the intent and the path.

``turn_facts`` decides them for every backend alike; ``Storage.analytics`` and
``Storage.unanswered_turns`` (voicebot/storage/base.py) return the shapes described here.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Why a turn counts as one the bot could not answer (beside a thumbs down, kept on the rating).
UNANSWERED_REASONS = ("fallback", "out_of_scope", "kb_not_found", "repeated_failure")


@dataclass(frozen=True)
class TurnFacts:
    handoff_reason: str | None
    unanswered: str | None  # one of UNANSWERED_REASONS, or None: answered
    sentiment: float | None
    timings: str  # JSON object: stage -> ms, plus "turn", their sum


def turn_facts(trace: dict[str, Any], path: str) -> TurnFacts:
    """The countable facts of one turn, from its trace (before it is sealed)."""
    response = trace.get("response") or {}
    intent = trace.get("intent") or {}
    handoff_reason = response.get("handoff_reason")
    if handoff_reason == "repeated_failure":
        unanswered: str | None = "repeated_failure"
    elif path == "fallback":
        unanswered = "out_of_scope" if intent.get("out_of_scope") else "fallback"
    elif response.get("key") == "kb_not_found":
        unanswered = "kb_not_found"
    elif intent.get("out_of_scope") and path not in ("handoff", "error"):
        unanswered = "out_of_scope"  # asked again for a slot: the message itself was not understood
    else:
        unanswered = None
    # Only finite numbers: a NaN is not JSON (PostgreSQL's jsonb refuses the turn, SQLite's json_each the whole dashboard).
    timings = {stage: float(ms) for stage, ms in (trace.get("timings_ms") or {}).items() if math.isfinite(float(ms))}
    if timings:
        timings["turn"] = round(sum(timings.values()), 3)
    score = (trace.get("sentiment") or {}).get("score")
    return TurnFacts(str(handoff_reason) if handoff_reason else None, unanswered,
                     float(score) if isinstance(score, int | float) else None, json.dumps(timings))


@dataclass(frozen=True)
class AnalyticsQuery:
    """Turns created in ``[since, until)`` of ``tenant`` (None: every tenant), in buckets of ``bucket_s``."""

    since: float
    until: float
    bucket_s: float
    tenant: str | None = None

    def bucket(self, at: float) -> int:
        return int((at - self.since) // self.bucket_s)


# The keys of what ``Storage.analytics`` returns: lists of rows (tuples), sparse (empty buckets absent).
ANALYTICS_KEYS = {
    "sessions": "(bucket, conversations started)",
    "turns": "(bucket, turns)",
    "languages": "(language, turns)",
    "intents": "(intent or None, turns)",
    "outcomes": "one row (conversations with a turn in the period, of them handed off)",
    "handoffs": "(reason, turns)",
    "ratings": "(stars 1..5, conversations with a turn in the period)",
    "thumbs": "(-1 or 1, turns)",
    "sentiment": "(bucket, mean score, turns scored)",
    "latency": "(bucket, stage, p50 ms, p95 ms, p99 ms, turns)",
}
PERCENTILES = (0.5, 0.95, 0.99)
# The keys of each row ``Storage.unanswered_turns`` returns; ``reason``: UNANSWERED_REASONS or rated_down.
UNANSWERED_COLUMNS = ("conversation_id", "turn_index", "user_text", "language", "intent", "reason", "rating", "created_at", "tenant")


def nearest_rank(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile (what the SQL of the SQLite backend computes)."""
    return sorted_values[max(0, math.ceil(p * len(sorted_values)) - 1)]


def aggregate(turns: Iterable[dict[str, Any]], conversations: dict[str, dict[str, Any]], query: AnalyticsQuery) -> dict[str, list[tuple[Any, ...]]]:
    """``Storage.analytics`` for a backend without SQL (tests/plugins/memory_storage.py): the same
    rows from turn dicts (``created_at``, ``conversation_id``, ``language``, ``intent``,
    ``rating`` and the ``TurnFacts`` fields) and conversation dicts (``created_at``, ``tenant``, ``rating``)."""

    def reached(conversation: dict[str, Any]) -> bool:
        return query.tenant is None or conversation["tenant"] == query.tenant

    period = [t for t in turns if query.since <= t["created_at"] < query.until and reached(conversations[t["conversation_id"]])]
    started = Counter(query.bucket(c["created_at"]) for c in conversations.values()
                      if query.since <= c["created_at"] < query.until and reached(c))
    handed: dict[str, bool] = {}
    for t in period:
        handed[t["conversation_id"]] = handed.get(t["conversation_id"], False) or t["handoff_reason"] is not None
    scores: dict[int, list[float]] = defaultdict(list)
    stages: dict[tuple[int, str], list[float]] = defaultdict(list)
    for t in period:
        if t["sentiment"] is not None:
            scores[query.bucket(t["created_at"])].append(t["sentiment"])
        for stage, ms in json.loads(t["timings"] or "{}").items():
            stages[(query.bucket(t["created_at"]), stage)].append(float(ms))

    def ranked(counts: Counter[Any]) -> list[tuple[Any, int]]:
        return sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))

    return {
        "sessions": sorted(started.items()),
        "turns": sorted(Counter(query.bucket(t["created_at"]) for t in period).items()),
        "languages": ranked(Counter(t["language"] for t in period)),
        "intents": ranked(Counter(t["intent"] for t in period)),
        "outcomes": [(len(handed), sum(handed.values()))],
        "handoffs": ranked(Counter(t["handoff_reason"] for t in period if t["handoff_reason"])),
        "ratings": sorted(Counter(conversations[i]["rating"] for i in handed if conversations[i]["rating"] is not None).items()),
        "thumbs": sorted(Counter(t["rating"] for t in period if t["rating"] is not None).items()),
        "sentiment": [(b, sum(v) / len(v), len(v)) for b, v in sorted(scores.items())],
        "latency": [(b, stage, *(nearest_rank(sorted(v), p) for p in PERCENTILES), len(v)) for (b, stage), v in sorted(stages.items())],
    }
