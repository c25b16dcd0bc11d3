"""``voicebot insights``: the unanswered topics of ``GET /api/insights/unanswered``, printed from
the stored conversations (the server may be running: the store is only read)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

from voicebot.learning.insights import Insights, unanswered_topics
from voicebot.storage.analytics import AnalyticsQuery

DAY_S = 86_400.0


def add_command(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    insights = sub.add_parser("insights", help="what customers asked that the bot could not answer, grouped into topics")
    common(insights)
    insights.add_argument("--days", type=float, default=30.0, help="look back this many days (default 30)")
    insights.add_argument("--tenant", help="one tenant's conversations (default: all)")
    insights.add_argument("--min-size", type=int, default=2, help="the fewest messages a topic has (default 2)")
    insights.add_argument("--method", choices=["auto", "encoder", "ngrams"], default="auto",
                          help="compare messages as multilingual sentence vectors (encoder, extra multilingual) or character n-grams")
    insights.add_argument("--json", action="store_true", help="print JSON (with every message) instead of text")
    insights.set_defaults(func=cmd_insights)


def cmd_insights(args: argparse.Namespace) -> int:
    from voicebot.cli import _opened, _settings, _tool_storage

    if args.days <= 0 or args.min_size < 1:
        print("voicebot: --days must be positive and --min-size at least 1", file=sys.stderr)
        return 2
    settings = _settings(args)
    now = time.time()
    query = AnalyticsQuery(since=now - args.days * DAY_S, until=now + 1, bucket_s=args.days * DAY_S, tenant=args.tenant)

    async def read() -> Insights:
        async with _opened(_tool_storage(settings)) as storage:
            return await unanswered_topics(storage, query, method=args.method, min_size=args.min_size)

    try:
        found = asyncio.run(read())
    except FileNotFoundError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(found), ensure_ascii=False, indent=2))
        return 0
    print(format_insights(found, args.days))
    return 0


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def format_insights(found: Insights, days: float) -> str:
    lines = [f"{found.turns} unanswered turn(s) in the last {days:g} day(s), {len(found.topics)} topic(s) (compared by {found.method}):"]
    for number, topic in enumerate(found.topics, 1):
        languages = ", ".join(f"{language} {n}" for language, n in topic.languages.items())
        reasons = ", ".join(f"{reason} {n}" for reason, n in topic.reasons.items())
        lines.append(f"\n{number}. topic {topic.id}: {topic.size} message(s) ({languages}; {reasons}), "
                     f"first {_day(topic.first_seen)}, last {_day(topic.last_seen)} UTC")
        lines += [f"     - {example}" for example in topic.examples]
    if found.topics:
        lines.append("\nDraft an intent or article from a topic on the dashboard (/dashboard) or with POST /api/insights/proposals.")
    return "\n".join(lines)
