"""Scale-out benchmark: the same chat load against one worker and two (PostgreSQL + Redis), and
SQLite against PostgreSQL with one worker, in one run on one machine.

Each configuration gets its own fresh servers (a voicebot ``serve`` started by bench/chat_load.py's
ServerProcess, PostgreSQL and Redis from the test fixtures on free 127.0.0.1 ports, all stopped
by pid), then N concurrent scripted conversations (bench/chat_load.py's client: ``run_level``),
spread over ``--client-processes`` client processes so the load generator is not the bottleneck.
Prints turns/s, p50/p95 latency, errors, the CPU each server process used, and the ratios; the
last line is JSON. Figures only: nothing passes or fails on time.

    .venv/bin/python bench/scale_out.py                        # 200 sessions, every configuration
    .venv/bin/python bench/scale_out.py --sessions 50 --max-seconds 10 --configs sqlite-1,pg-redis-2

Target (DESIGN.md, on an idle 2-core machine): 2 workers >= 1.6x the turns/s of 1 worker and
>= 300 turns/s, 0 errors. On a shared machine the figures are a lower bound: say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench")]

import chat_load  # noqa: E402 - the client machinery, reused
import psutil  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    storage: str  # sqlite or postgres
    workers: int
    redis: bool


CONFIGS = {c.name: c for c in (
    Config("sqlite-1", "sqlite", 1, False),
    Config("pg-1", "postgres", 1, False),
    Config("pg-redis-1", "postgres", 1, True),
    Config("pg-redis-2", "postgres", 2, True),
)}


def start_postgres(stack: ExitStack) -> tuple[int | None, str]:
    """A PostgreSQL of the test fixture (tests/pg_server.py), stopped when ``stack`` closes."""
    from tests.pg_server import PostgresServer

    server = PostgresServer().start()  # in a folder of its own (the postgres user owns it when we are root)
    stack.callback(server.remove)
    return server.pid, server.create_database()


def tree_cpu_s(pid: int | None) -> dict[int, float]:
    """CPU seconds (user + system) of a process and of each of its children, by pid."""
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    used: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return used


def services_cpu_s(pids: list[int | None]) -> float:
    """CPU seconds of PostgreSQL (postmaster and its backends) and Redis, summed: on one machine
    they take from the same cores as the workers, which bounds what a second worker can add."""
    return sum(sum(tree_cpu_s(pid).values()) for pid in pids)


def _client_process(url: str, sessions: int, offset: int, args: argparse.Namespace, queue: Any) -> None:
    """One load-generating process: ``sessions`` conversations (scripts from ``offset``)."""

    async def run() -> tuple[chat_load.LevelStats, float]:
        original = chat_load.run_session

        async def shifted(index: int, *rest: Any) -> None:
            await original(index + offset, *rest)

        chat_load.run_session = shifted  # the same scripts round-robin over all client processes
        return await chat_load.run_level(url, sessions, args)

    started_cpu = time.process_time()
    stats, elapsed = asyncio.run(run())
    queue.put((stats, elapsed, time.process_time() - started_cpu))


def merge(parts: list[tuple[chat_load.LevelStats, float, float]], sessions: int) -> tuple[chat_load.LevelStats, float, float]:
    merged = chat_load.LevelStats(sessions=sessions)
    for stats, _, _ in parts:
        for item in fields(stats):
            if item.name == "sessions":
                continue
            mine, theirs = getattr(merged, item.name), getattr(stats, item.name)
            if item.name == "stage_order":
                merged.stage_order.extend(s for s in theirs if s not in mine)
            elif item.name == "error_samples":
                mine.extend(theirs[: max(0, 8 - len(mine))])
            elif isinstance(mine, list):
                mine.extend(theirs)
            elif hasattr(mine, "update"):
                mine.update(theirs)
            else:
                setattr(merged, item.name, mine + theirs)
    return merged, max(part[1] for part in parts), sum(part[2] for part in parts)


def run_load(url: str, args: argparse.Namespace) -> tuple[chat_load.LevelStats, float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    count = max(1, min(args.client_processes, args.sessions))
    shares = [args.sessions // count + (1 if i < args.sessions % count else 0) for i in range(count)]
    offsets = [sum(shares[:i]) for i in range(count)]
    processes = [context.Process(target=_client_process, args=(url, share, offset, args, queue)) for share, offset in zip(shares, offsets, strict=True)]
    for process in processes:
        process.start()
    deadline = time.monotonic() + args.max_seconds + args.grace_seconds + args.turn_timeout + 60
    parts = [queue.get(timeout=max(1.0, deadline - time.monotonic())) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    return merge(parts, args.sessions)


def measure(config: Config, args: argparse.Namespace, models: Path, work: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        folder = work / config.name
        data_dir = folder / "data"
        shutil.copytree(models, data_dir / "models")
        env: dict[str, str] = {"VOICEBOT_PRIVACY__RETENTION_DAYS": "30"}
        service_pids: list[int | None] = []
        if config.storage == "postgres":
            postgres_pid, url = start_postgres(stack)
            service_pids.append(postgres_pid)
            env.update({"VOICEBOT_STORAGE__BACKEND": "postgres", "VOICEBOT_STORAGE__URL": url})
        if config.redis:
            redis_server = RedisServer(folder / "redis").start()
            stack.callback(redis_server.stop)
            service_pids.append(redis_server.process.pid if redis_server.process else None)
            env["VOICEBOT_COORDINATION__REDIS_URL"] = redis_server.url
        server = chat_load.ServerProcess(data_dir, extra_args=["--workers", str(config.workers)], extra_env=env)
        stack.callback(server.stop)
        server.start(args.startup_timeout)
        time.sleep(1.0)  # every worker up (the supervisor answers /health through the first one ready)
        cpu_before, services_before = tree_cpu_s(server.pid), services_cpu_s(service_pids)
        stats, elapsed, client_cpu = run_load(server.ws_url, args)
        cpu_after, services_used = tree_cpu_s(server.pid), services_cpu_s(service_pids) - services_before
        per_process = {pid: round(cpu_after[pid] - cpu_before.get(pid, 0.0), 2) for pid in cpu_after}
        level = chat_load.summarize(stats, elapsed, client_cpu, server, sum(per_process.values()), None)
        warnings = [line for line in (server.log_path.read_text(errors="replace").splitlines() if server.log_path else [])
                    if "ERROR" in line or "Traceback" in line]
        cpu = sum(per_process.values())
        turns = len(stats.latencies_ms) or 1
        cost_ms = {"server": 1000 * cpu / turns, "client": 1000 * client_cpu / turns, "postgres_redis": 1000 * services_used / turns}
        return {"config": config.name, "storage": config.storage, "workers": config.workers, "redis": config.redis,
                # Turns per CPU-second the server processes got: what a turn costs, whatever share of
                # the machine the servers were given (on a shared machine turns/s follows that share).
                "turns_per_server_cpu_s": round(len(stats.latencies_ms) / cpu, 1) if cpu else None,
                # Every CPU-millisecond a turn costs on this machine (workers, load generator,
                # PostgreSQL + Redis), and the turns/s all cores could give at that cost: the most
                # any number of workers can reach here while the clients share the machine.
                "cpu_ms_per_turn": {part: round(value, 2) for part, value in cost_ms.items()},
                "machine_ceiling_turns_per_s": round(1000 * (os.cpu_count() or 1) / sum(cost_ms.values()), 1),
                "server_startup_s": round(server.startup_s, 1), "server_cpu_s_by_pid": per_process, "server_log_errors": warnings[-5:],
                **level}


def ratio(results: dict[str, dict[str, Any]], top: str, bottom: str) -> float | None:
    if top not in results or bottom not in results or not results[bottom].get("turns_per_s"):
        return None
    return round(results[top]["turns_per_s"] / results[bottom]["turns_per_s"], 2)


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200, help="concurrent conversations (default 200)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"which, in order (default all: {','.join(CONFIGS)})")
    parser.add_argument("--client-processes", type=int, default=2, help="load-generating processes (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="times each conversation repeats its script (default 2)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per configuration: no new turn after this (default 20)")
    parser.add_argument("--grace-seconds", type=float, default=5.0)
    parser.add_argument("--turn-timeout", type=float, default=30.0)
    parser.add_argument("--startup-timeout", type=float, default=240.0)
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = parser.parse_args(argv)
    args.configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = [name for name in args.configs if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; known: {', '.join(CONFIGS)}")
    # What chat_load's client reads from its own arguments.
    args.think_seconds, args.no_start_language, args.no_compression = 0.0, False, False
    return args


def train_models(work: Path) -> Path:
    seed = work / "models-seed"
    subprocess.run([sys.executable, "-m", "voicebot", "train", "--data-dir", str(seed)], check=True, capture_output=True, cwd=REPO_ROOT)
    return seed / "models"


def print_result(result: dict[str, Any], out: Callable[[str], None]) -> None:
    lat = result["latency_ms"]
    out(f"== {result['config']}: {result['storage']}, {result['workers']} worker(s), redis {result['redis']}: "
        f"{result['turns']} turns in {result['elapsed_s']} s = {result['turns_per_s']} turns/s; latency p50 {lat['p50']} ms, "
        f"p95 {lat['p95']} ms; errors {result['errors']}" + (f" {result['error_kinds']}" if result["errors"] else ""))
    out(f"   server CPU s by pid {result['server_cpu_s_by_pid']} (elapsed {result['elapsed_s']} s): "
        f"{result['turns_per_server_cpu_s']} turns per server CPU-second; client CPU {result['client_cpu_s']} s")
    cost = result["cpu_ms_per_turn"]
    out(f"   CPU ms per turn: workers {cost['server']}, clients {cost['client']}, PostgreSQL + Redis {cost['postgres_redis']}; "
        f"all {os.cpu_count()} cores at that cost: {result['machine_ceiling_turns_per_s']} turns/s")
    for sample in result["error_samples"][:4]:
        out(f"   ! {sample}")
    for line in result["server_log_errors"]:
        out(f"   server log: {line[:200]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Callable[[str], None] = (lambda _: None) if args.json else (lambda line: print(line, flush=True))
    work = Path(tempfile.mkdtemp(prefix="voicebot-scale-out-"))
    load_before = machine_load()
    results: dict[str, dict[str, Any]] = {}
    try:
        out(f"scale-out bench: {args.sessions} sessions, {args.rounds} rounds, {args.max_seconds:g} s per configuration, "
            f"{args.client_processes} client processes; {load_before}")
        models = train_models(work)
        for name in args.configs:
            out(f"-- {name} ...")
            results[name] = measure(CONFIGS[name], args, models, work)
            print_result(results[name], out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {"pg_redis_2_over_1_workers": ratio(results, "pg-redis-2", "pg-redis-1"),
              "pg_over_sqlite_1_worker": ratio(results, "pg-1", "sqlite-1"),
              "redis_cost_1_worker": ratio(results, "pg-redis-1", "pg-1")}
    out(f"== ratios (turns/s): 2 workers / 1 worker (PG + Redis) {ratios['pg_redis_2_over_1_workers']}; "
        f"PostgreSQL / SQLite, 1 worker {ratios['pg_over_sqlite_1_worker']}; with / without Redis, 1 worker {ratios['redis_cost_1_worker']}")
    out(f"machine: before {load_before}; after {machine_load()} (other work on the machine takes from these figures)")
    print(json.dumps({"bench": "scale_out", "sessions": args.sessions, "load_before": load_before, "load_after": machine_load(),
                      "ratios": ratios, "results": list(results.values())}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
