"""Dashboard and insights figures: how long ``Storage.analytics`` (SQLite: counts in SQL, percentiles
in numpy; PostgreSQL: all in SQL) and the unanswered-topic clustering take on a store of synthetic turns.

    .venv/bin/python bench/analytics_bench.py [--turns 20000] [--unanswered 500] [--repeat 5]
    .venv/bin/python bench/analytics_bench.py --backend postgres [--postgres-url postgresql://u:pw@db/empty_db]

Turns are written straight through the backend's ``save_turn`` (sealed like the server's, no
encryption) over 30 days, 6 stages of timings each; a share of them are fallbacks in two
languages about a handful of topics. Figures only; other processes on the machine skew timings,
so the load average is printed with them. PostgreSQL: by default a server of our own
(``tests/pg_server.py``: initdb in a temporary folder, a free 127.0.0.1 port, stopped by pid).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voicebot.core.session import DialogueState  # noqa: E402
from voicebot.learning.insights import available_method, group  # noqa: E402
from voicebot.storage.analytics import AnalyticsQuery  # noqa: E402
from voicebot.storage.base import Storage, StoredTurn  # noqa: E402
from voicebot.storage.postgres import PostgresStorage  # noqa: E402
from voicebot.storage.sqlite import SqliteStorage  # noqa: E402

QUESTIONS = ["do you sell gift cards", "¿venden tarjetas de regalo?", "when are your stores open", "¿a qué hora abre la tienda?",
             "are you hiring", "¿tienen ofertas de trabajo?", "can I pay with bitcoin", "¿aceptan bitcoin?"]
STAGES = ("language", "nlu", "dialogue", "generation", "response")


async def fill(storage: Storage, turns: int, unanswered: int, days: float) -> None:
    rng = random.Random(0)
    state = DialogueState(language="en")
    per_conversation = 4
    for c in range(turns // per_conversation):
        await storage.create_conversation(f"c{c}", f"token-{c}", "websocket", "en", None, state, tenant=rng.choice(["shop", "telco"]))
        for index in range(1, per_conversation + 1):
            fallback = rng.random() < unanswered / turns
            trace = {"response": {"path": "fallback" if fallback else "template", "handoff_reason": None},
                     "intent": {"name": "out_of_scope" if fallback else "greet", "out_of_scope": fallback},
                     "sentiment": {"score": rng.uniform(-1, 1)}, "timings_ms": {s: rng.uniform(0.1, 30) for s in STAGES}}
            text = rng.choice(QUESTIONS) if fallback else "hello"
            await storage.save_turn(StoredTurn(f"c{c}", index, f"t{c}-{index}", text, "bot", "en", trace["intent"]["name"],
                                               trace["response"]["path"], trace), state, "active")
    # Spread the turns over the period (save_turn stamps them now), below the backend.
    spread = int(days * 86400)
    follow = "UPDATE turns SET created_at = (SELECT c.created_at FROM conversations c WHERE c.id = turns.conversation_id) + turn_index"
    if isinstance(storage, SqliteStorage):
        with sqlite3.connect(storage.path) as db:
            db.execute("UPDATE conversations SET created_at = created_at - abs(random()) % ?", (spread,))
            db.execute(follow)
    else:
        assert isinstance(storage, PostgresStorage)
        with psycopg.connect(storage.url) as db:
            db.execute("UPDATE conversations SET created_at = created_at - floor(random() * %s)", (spread,))
            db.execute(follow)
            db.execute("ANALYZE")  # fresh statistics, as autovacuum would have after a day of turns


def timed(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)] * 1000:.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20_000)
    parser.add_argument("--unanswered", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", help="a running PostgreSQL with an empty database (default: start one)")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as folder:
        storage: Storage
        if args.backend == "sqlite":
            storage = SqliteStorage(Path(folder) / "bench.sqlite")
        else:
            url = args.postgres_url
            if url is None:
                from tests.pg_server import PostgresServer
                server = PostgresServer().start()
                url = server.create_database("voicebot_analytics_bench")
            storage = PostgresStorage(url)
        await storage.open()
        started = time.perf_counter()
        await fill(storage, args.turns, args.unanswered, 30)
        print(f"{args.backend}: stored {args.turns} turns in {time.perf_counter() - started:.1f} s (load average {os.getloadavg()[0]:.1f})")
        now = time.time()
        for days, bucket in ((1, 1800), (7, 3 * 3600), (30, 86400)):
            query = AnalyticsQuery(now - days * 86400, now + 1, bucket)
            samples = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                await storage.analytics(query)
                samples.append(time.perf_counter() - started)
            print(f"analytics over {days:>2} day(s): {timed(samples)}")
        query = AnalyticsQuery(now - 30 * 86400, now + 1, 86400)
        rows = await storage.unanswered_turns(query, 2000)
        for method in dict.fromkeys([available_method(), "ngrams"]):
            samples = []
            for _ in range(max(1, args.repeat // 2)):
                started = time.perf_counter()
                topics = group(rows, method)
                samples.append(time.perf_counter() - started)
            print(f"clustering {len(rows)} unanswered turns by {method}: {timed(samples)}, {len(topics)} topics")
        await storage.close()
        if server is not None:
            server.remove()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
