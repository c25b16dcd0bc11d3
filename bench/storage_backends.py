"""SQLite vs PostgreSQL storage, one worker: save_turn and resume latency (p50/p95) and turns/s.

N concurrent sessions each save T turns one after another (what the persistence stage does after
every answer: redaction, encryption, one transaction with the state), then every session is
resumed at once (what a reconnect does). Both backends run with the bot's sealer (redaction and
Fernet encryption on) in this one process, so the figures compare the storage, not the pipeline.
It only measures; it never passes or fails.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across a process crash, not a power
cut); PostgreSQL with its defaults (``fsync`` and ``synchronous_commit`` on: durable across a
power cut). By default the PostgreSQL server is one of our own (``tests/pg_server.py``: initdb in a
temporary folder, a free 127.0.0.1 port, stopped by pid); ``--postgres-url`` uses a running one
(its database must be empty: the tables are created and filled).

    .venv/bin/python bench/storage_backends.py                       # 1, 50, 200 sessions x 10 turns
    .venv/bin/python bench/storage_backends.py --sessions 200 --turns 20
    .venv/bin/python bench/storage_backends.py --postgres-setting synchronous_commit=off   # no WAL flush wait
    .venv/bin/python bench/storage_backends.py --postgres-url postgresql://u:pw@db/voicebot_bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.fernet import Fernet

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from voicebot.config import PrivacySettings  # noqa: E402
from voicebot.core.session import DialogueState, SlotValue  # noqa: E402
from voicebot.privacy.sealing import Sealer  # noqa: E402
from voicebot.storage.base import Storage, StoredTurn  # noqa: E402
from voicebot.storage.postgres import PostgresStorage  # noqa: E402
from voicebot.storage.sqlite import SqliteStorage  # noqa: E402

USER_TEXT = "hi, my order 12345 has not arrived, my email is anna.schmidt@example.com and my phone +49 151 2345 6789"
BOT_TEXT = "Order 12345 (Router AX3000) left our warehouse on 2026-11-28 and should arrive tomorrow."


@dataclass
class Result:
    backend: str
    sessions: int
    turns: int
    save_ms: list[float]
    resume_ms: list[float]
    wall_s: float

    def row(self) -> str:
        save, resume = np.array(self.save_ms), np.array(self.resume_ms)
        return (f"{self.backend:<10} {self.sessions:>8} {self.sessions * self.turns:>7} {np.percentile(save, 50):>9.2f} "
                f"{np.percentile(save, 95):>9.2f} {self.sessions * self.turns / self.wall_s:>9.0f} "
                f"{np.percentile(resume, 50):>11.2f} {np.percentile(resume, 95):>11.2f}")


def a_trace(index: int) -> dict[str, object]:
    return {"turn": index, "intent": {"name": "order_status", "confidence": 0.93, "top": [["order_status", 0.93], ["refund", 0.04]]},
            "entities": [{"slot": "order_id", "value": "12345"}, {"slot": "email", "value": "anna.schmidt@example.com"}],
            "timings_ms": {"language": 0.4, "nlu": 1.2, "dialogue": 0.8, "response": 0.3}, "response": {"path": "action", "key": "order_status"}}


def a_state(index: int) -> DialogueState:
    state = DialogueState(language="en", active_intent="order_status", turn_count=index)
    state.slots["order_id"] = SlotValue("12345", 1.0, 1, "my order 12345")
    state.slots["email"] = SlotValue("anna.schmidt@example.com", 1.0, 1, "my email is anna.schmidt@example.com")
    return state


async def timed(call: Callable[[], Awaitable[object]], into: list[float]) -> None:
    started = time.perf_counter()
    await call()
    into.append((time.perf_counter() - started) * 1000)


async def run(backend: str, storage: Storage, sessions: int, turns: int, run_id: str) -> Result:
    ids = [f"{run_id}-{number}" for number in range(sessions)]
    for conversation_id in ids:
        await storage.create_conversation(conversation_id, f"token-{conversation_id}", "websocket", "en", None, DialogueState(language="en"))
    save_ms: list[float] = []

    async def session(conversation_id: str) -> None:
        for index in range(1, turns + 1):
            turn = StoredTurn(conversation_id, index, f"t{index}", USER_TEXT, BOT_TEXT, "en", "order_status", "action", a_trace(index))
            await timed(lambda turn=turn, index=index: storage.save_turn(turn, a_state(index), "active"), save_ms)

    started = time.perf_counter()
    await asyncio.gather(*(session(conversation_id) for conversation_id in ids))
    wall_s = time.perf_counter() - started
    resume_ms: list[float] = []
    await asyncio.gather(*(timed(lambda c=conversation_id: storage.resume(f"token-{c}"), resume_ms) for conversation_id in ids))
    return Result(backend, sessions, turns, save_ms, resume_ms, wall_s)


async def main_async(args: argparse.Namespace) -> None:
    sealer = Sealer.from_settings(PrivacySettings(encryption_keys=[Fernet.generate_key().decode()]), Path("/nonexistent"), create_key=False)
    counts = [int(part) for part in args.sessions.split(",")]
    server = None
    url = args.postgres_url
    if url is None:
        from tests.pg_server import PostgresServer

        # The server's defaults (fsync on), not the tests' fsync=off.
        settings = {"shared_buffers": "128MB", "max_connections": "100"}
        settings.update(pair.split("=", 1) for pair in args.postgres_setting)  # type: ignore[misc]
        server = PostgresServer(settings=settings).start()
        url = server.create_database("voicebot_bench")
    print(f"load average before: {' '.join(f'{value:.1f}' for value in os.getloadavg())} ({os.cpu_count()} CPUs; "
          "other processes share this machine: compare the backends with each other, not with another machine)")
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as folder:
            backends: list[tuple[str, Storage]] = [("sqlite", SqliteStorage(Path(folder) / "voicebot.sqlite", sealer)),
                                                   ("postgres", PostgresStorage(url, sealer))]
            for name, storage in backends:
                await storage.open()
                try:
                    for number, sessions in enumerate(counts):
                        results.append(await run(name, storage, sessions, args.turns, f"r{number}"))
                finally:
                    await storage.close()
    finally:
        if server is not None:
            server.remove()
    print(f"load average after:  {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print(f"\n{'backend':<10} {'sessions':>8} {'turns':>7} {'save p50':>9} {'save p95':>9} {'turns/s':>9} {'resume p50':>11} {'resume p95':>11}"
          "   (ms)")
    for result in results:
        print(result.row())
    by_key = {(result.backend, result.sessions): result for result in results}
    print()
    for sessions in counts:
        sqlite, postgres = by_key[("sqlite", sessions)], by_key[("postgres", sessions)]
        ratio = (sessions * args.turns / postgres.wall_s) / (sessions * args.turns / sqlite.wall_s)
        print(f"{sessions} sessions: PostgreSQL turns/s = {ratio:.2f} x SQLite's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,50,200", help="concurrent sessions, comma-separated (one run each)")
    parser.add_argument("--turns", type=int, default=10, help="turns each session saves")
    parser.add_argument("--postgres-url", help="a running PostgreSQL with an empty database (default: start one)")
    parser.add_argument("--postgres-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the PostgreSQL started here, e.g. synchronous_commit=off (repeatable)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
