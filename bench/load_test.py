"""Load test of the websocket chat channel: sessions held for a while plus session churn.

N chat sessions stay open for --duration seconds, each a person: a message from the demo
domain's scripts (en, zh, es, de, fr; bench/chat_load.py), the answer, a pause of --think
seconds, the next message. Meanwhile --churn sessions are opened and closed, --churn-concurrency
at a time, each with one turn, ended three ways in turn: politely ('end'), by dropping the socket
after the answer, and by dropping it while the answer is still being made.

A warm-up round of the same shape comes first (by default the very same round: the first one
raises the native heap's high-water mark once, see LoadConfig); the server's RSS after it, once
idle, is the baseline that the RSS after the churn is compared with (a leak shows as growth). Every
acknowledged turn must be stored: the turn counts come from the REST API afterwards.

Prints sessions held, turns/s, turn latency p50/p95/p99, errors, peak RSS, RSS baseline and RSS
after churn. Figures only: it never passes or fails on time (tests/test_load.py runs the same
scenario and checks errors, stored turns and memory).

    .venv/bin/python bench/load_test.py                                   # 200 sessions, 60 s, 1000 churn
    .venv/bin/python bench/load_test.py --sessions 50 --duration 20 --churn 200
    .venv/bin/python bench/load_test.py --url ws://127.0.0.1:8080/ws --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_load import SCRIPTS, ServerProcess, http_base, pct, request_session_token  # noqa: E402  (a sibling script, not a package)

MiB = 2**20


@dataclass
class LoadConfig:
    sessions: int = 200
    duration_s: float = 60.0
    think_s: tuple[float, float] = (1.0, 2.0)
    ramp_s: float = 5.0  # sessions arrive spread over this long
    churn: int = 1000
    churn_concurrency: int = 50
    # The warm-up is the measured round itself by default (None: duration_s, churn). The first
    # full round raises the native heap's high-water mark once (glibc arenas of the worker
    # threads, numpy/BLAS buffers sized by the largest NLU batches seen: +47-61 MiB after a 15 s,
    # 250-churn warm-up, measured; +3-11 MiB for each further identical round, while the Python
    # heap stays flat under tracemalloc). Only a baseline taken after that point shows growth per session.
    warmup_s: float | None = None
    warmup_churn: int | None = None
    turn_timeout_s: float = 120.0


@dataclass
class LoadStats:
    latencies_ms: list[float] = field(default_factory=list)
    acked: dict[str, set[str]] = field(default_factory=dict)  # session id -> turn ids the server acknowledged
    held: set[str] = field(default_factory=set)  # sessions held for the whole round (not churn)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    open_now: int = 0
    open_max: int = 0
    churned: int = 0

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail}".splitlines()[0][:300])


class Client:
    """Opens chat sessions the way the chat page does: a session token, then the websocket."""

    def __init__(self, ws_url: str, http: httpx.AsyncClient, api_headers: dict[str, str] | None, config: LoadConfig) -> None:
        self.ws_url = ws_url
        self.base = http_base(ws_url)
        self.http = http
        self.api_headers = api_headers or {}
        self.config = config

    async def connect(self) -> ClientConnection:
        response = await request_session_token(self.http, self.base)
        url = self.ws_url
        if response.status_code != 404:  # servers before access control need no token
            response.raise_for_status()
            url = f"{self.ws_url}?access_token={response.json()['token']}"
        return await connect(url, max_size=8 * MiB, open_timeout=self.config.turn_timeout_s, ping_interval=None, close_timeout=5)


async def _recv(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _start(ws: ClientConnection, language: str, stats: LoadStats, timeout: float) -> str | None:
    await ws.send(json.dumps({"type": "start", "language": language}))
    while True:
        frame = await _recv(ws, timeout)
        if frame["type"] == "session":
            stats.acked[frame["session_id"]] = set()
            return str(frame["session_id"])
        if frame["type"] == "error":
            stats.error(f"error_frame:{frame.get('code')}", f"on start: {frame.get('message')}")
            return None


async def _turn(ws: ClientConnection, session_id: str, text: str, stats: LoadStats, timeout: float, *, wait_answer: bool = True) -> bool:
    """One message: its ack (counted as a turn the server must store), then its answer."""
    sent = time.perf_counter()
    await ws.send(json.dumps({"type": "message", "text": text}, ensure_ascii=False))
    turn_id: str | None = None
    while True:
        frame = await _recv(ws, timeout)
        kind = frame["type"]
        if kind == "ack":
            turn_id = frame["turn_id"]
            stats.acked[session_id].add(str(turn_id))
            if not wait_answer:
                return True
        elif kind == "message" and frame.get("turn_id") == turn_id:
            stats.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
            return True
        elif kind == "error":
            stats.error(f"error_frame:{frame.get('code')}", f"reply to {text!r}: {frame.get('message')}")
            return False


async def _guarded(stats: LoadStats, what: str, body: Callable[[], Awaitable[None]]) -> None:
    try:
        await body()
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        stats.error(f"timeout:{what}")
    except ConnectionClosed as exc:
        stats.error(f"closed:{what}", f"code {exc.rcvd.code if exc.rcvd else None}")
    except Exception as exc:  # noqa: BLE001 - every failure is a figure here
        stats.error(f"exception:{what}:{type(exc).__name__}", str(exc))


async def held_session(client: Client, index: int, until: float, stats: LoadStats) -> None:
    """A person chatting until ``until``, then saying goodbye with 'end'."""
    config = client.config
    language, script = SCRIPTS[index % len(SCRIPTS)]
    loop = asyncio.get_running_loop()

    async def body() -> None:
        await asyncio.sleep(random.uniform(0, config.ramp_s))
        async with await client.connect() as ws:
            session_id = await _start(ws, language, stats, config.turn_timeout_s)
            if session_id is None:
                return
            stats.held.add(session_id)
            stats.open_now += 1
            stats.open_max = max(stats.open_max, stats.open_now)
            try:
                turn = 0
                while loop.time() < until:
                    if not await _turn(ws, session_id, script[turn % len(script)], stats, config.turn_timeout_s):
                        return
                    turn += 1
                    await asyncio.sleep(random.uniform(*config.think_s))
                await ws.send(json.dumps({"type": "end"}))
                while (await _recv(ws, config.turn_timeout_s))["type"] != "ended":
                    pass
            finally:
                stats.open_now -= 1

    await _guarded(stats, "held", body)


async def churn_session(client: Client, index: int, stats: LoadStats) -> None:
    """Open, one turn, close: politely, by dropping the socket after the answer, or by dropping it
    while the answer is being made (the turn must still be stored)."""
    config = client.config
    language, script = SCRIPTS[index % len(SCRIPTS)]
    how = index % 3

    async def body() -> None:
        async with await client.connect() as ws:
            session_id = await _start(ws, language, stats, config.turn_timeout_s)
            if session_id is None:
                return
            stats.open_now += 1
            stats.open_max = max(stats.open_max, stats.open_now)
            try:
                if not await _turn(ws, session_id, script[1], stats, config.turn_timeout_s, wait_answer=how != 2):
                    return
                if how == 0:
                    await ws.send(json.dumps({"type": "end"}))
                    while (await _recv(ws, config.turn_timeout_s))["type"] != "ended":
                        pass
            finally:
                stats.open_now -= 1
        stats.churned += 1

    await _guarded(stats, "churn", body)


async def run_round(client: Client, sessions: int, duration_s: float, churn: int, stats: LoadStats) -> float:
    """Hold ``sessions`` for ``duration_s`` while ``churn`` sessions come and go; seconds taken."""
    started = time.perf_counter()
    until = asyncio.get_running_loop().time() + client.config.ramp_s + duration_s
    gate = asyncio.Semaphore(client.config.churn_concurrency)

    async def churn_one(index: int) -> None:
        async with gate:
            await churn_session(client, index, stats)

    tasks = [asyncio.create_task(held_session(client, i, until, stats)) for i in range(sessions)]
    tasks += [asyncio.create_task(churn_one(i)) for i in range(churn)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return time.perf_counter() - started


class ServerWatch:
    """Server-side figures: active sessions (GET /health) and RSS of its process when local."""

    def __init__(self, client: Client, pid: int | None) -> None:
        self.client = client
        self.process = psutil.Process(pid) if pid else None
        self.sessions_max = 0
        self.rss_max = 0

    def rss(self) -> int | None:
        return self.process.memory_info().rss if self.process else None

    async def active_sessions(self) -> int:
        return int((await self.client.http.get(f"{self.client.base}/health")).json()["active_sessions"])

    async def sample(self, every_s: float = 0.5) -> None:
        while True:
            self.rss_max = max(self.rss_max, self.rss() or 0)
            try:
                self.sessions_max = max(self.sessions_max, await self.active_sessions())
            except httpx.HTTPError:
                pass
            await asyncio.sleep(every_s)

    async def settled_rss(self, timeout: float = 60.0, settle_s: float = 3.0) -> int | None:
        """RSS once every session has ended on the server and it had ``settle_s`` to tidy up."""
        deadline = time.monotonic() + timeout
        while await self.active_sessions() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle_s)
        return self.rss()


async def stored_turns(client: Client) -> dict[str, int]:
    """turn_count of every conversation, from the REST API (needs an API key that reads transcripts)."""
    counts: dict[str, int] = {}
    offset = 0
    while True:
        page = (await client.http.get(f"{client.base}/api/conversations", params={"limit": 500, "offset": offset},
                                      headers=client.api_headers)).raise_for_status().json()
        counts.update({item["id"]: int(item["turn_count"]) for item in page["items"]})
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return counts


async def stored_turn_ids(client: Client, session_id: str) -> set[str]:
    detail = (await client.http.get(f"{client.base}/api/conversations/{session_id}", headers=client.api_headers)).raise_for_status().json()
    return {str(turn["turn_id"]) for turn in detail["turns"]}


@dataclass
class LoadReport:
    figures: dict[str, Any]
    stats: LoadStats
    missing_turns: dict[str, tuple[int, int]]  # session id -> (acknowledged, stored), where they differ

    @property
    def rss_growth_mib(self) -> float | None:
        base, after = self.figures["rss_baseline_mib"], self.figures["rss_after_churn_mib"]
        return None if base is None or after is None else after - base


async def run_load(ws_url: str, config: LoadConfig, *, server_pid: int | None, api_headers: dict[str, str] | None,
                   log: Callable[[str], None] = lambda line: None) -> LoadReport:
    """Warm-up round, baseline RSS, the measured round, RSS after churn, then the stored-turn check."""
    async with httpx.AsyncClient(timeout=config.turn_timeout_s, limits=httpx.Limits(max_connections=config.churn_concurrency + 20)) as http:
        client = Client(ws_url, http, api_headers, config)
        watch = ServerWatch(client, server_pid)
        start_rss = watch.rss()
        warm = LoadStats()
        warmup_s = config.duration_s if config.warmup_s is None else config.warmup_s
        warmup_churn = config.churn if config.warmup_churn is None else config.warmup_churn
        log(f"warm-up: {config.sessions} sessions for {warmup_s:g} s + churn of {warmup_churn}")
        await run_round(client, config.sessions, warmup_s, warmup_churn, warm)
        baseline = await watch.settled_rss()
        log(f"baseline RSS {baseline / MiB:.1f} MiB" if baseline else "baseline RSS: server not local")
        stats = LoadStats()
        sampler = asyncio.create_task(watch.sample())
        log(f"measured round: {config.sessions} sessions for {config.duration_s:g} s (think {config.think_s[0]:g}-"
            f"{config.think_s[1]:g} s) + churn of {config.churn}, {config.churn_concurrency} at a time")
        try:
            elapsed = await run_round(client, config.sessions, config.duration_s, config.churn, stats)
        finally:
            sampler.cancel()
        after = await watch.settled_rss()
        active_after = await watch.active_sessions()
        missing: dict[str, tuple[int, int]] = {}
        checked = False
        if api_headers:
            counts = await stored_turns(client)
            for source in (warm, stats):
                for session_id, acked in source.acked.items():
                    if counts.get(session_id, 0) != len(acked):
                        missing[session_id] = (len(acked), counts.get(session_id, 0))
            for session_id in stats.held:  # the long conversations: the very turns, by id
                stored = await stored_turn_ids(client, session_id)
                if not stats.acked[session_id] <= stored:
                    missing[session_id] = (len(stats.acked[session_id]), len(stored & stats.acked[session_id]))
            checked = True
        peak = _peak_rss(server_pid)
    turns = len(stats.latencies_ms)
    figures = {
        "sessions": config.sessions, "duration_s": config.duration_s, "think_s": list(config.think_s),
        "churn": config.churn, "churn_concurrency": config.churn_concurrency, "warmup_s": warmup_s, "warmup_churn": warmup_churn,
        "sessions_held_max_client": stats.open_max, "sessions_held_max_server": watch.sessions_max,
        "churn_completed": stats.churned, "sessions_active_after": active_after,
        "turns": turns, "turns_acked": sum(len(a) for a in stats.acked.values()), "elapsed_s": round(elapsed, 1),
        "turns_per_s": round(turns / elapsed, 1) if elapsed else None,
        "latency_ms": {"p50": pct(stats.latencies_ms, 50), "p95": pct(stats.latencies_ms, 95), "p99": pct(stats.latencies_ms, 99),
                       "max": round(max(stats.latencies_ms), 1) if turns else None},
        "errors": sum(stats.errors.values()) + sum(warm.errors.values()), "error_kinds": dict(stats.errors + warm.errors),
        "error_samples": warm.error_samples + stats.error_samples,
        "turns_checked_in_storage": checked, "sessions_with_missing_turns": len(missing),
        "rss_peak_mib": _mib(peak), "rss_sampled_max_mib": _mib(watch.rss_max or None),
        "rss_start_mib": _mib(start_rss), "rss_baseline_mib": _mib(baseline), "rss_after_churn_mib": _mib(after),
    }
    return LoadReport(figures, stats, missing)


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MiB, 1)


def _peak_rss(pid: int | None) -> int | None:
    """VmHWM: the most RSS the server process ever had (Linux)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- command line


def print_report(report: LoadReport) -> None:
    f = report.figures
    lat = f["latency_ms"]
    print(f"\n== {f['sessions']} sessions held for {f['duration_s']:g} s + churn of {f['churn']} ({f['churn_concurrency']} at a time)")
    print(f"   sessions held at once: {f['sessions_held_max_server']} (server /health), {f['sessions_held_max_client']} (client); "
          f"churned {f['churn_completed']}; still open on the server afterwards: {f['sessions_active_after']}")
    print(f"   turns: {f['turns']} answered, {f['turns_acked']} acknowledged in {f['elapsed_s']} s -> {f['turns_per_s']} turns/s")
    print(f"   turn latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"   errors: {f['errors']}" + (f" {f['error_kinds']}" if f["errors"] else ""))
    stored = ("every acknowledged turn stored" if not f["sessions_with_missing_turns"]
              else f"{f['sessions_with_missing_turns']} sessions with missing turns") if f["turns_checked_in_storage"] else "not checked (no API key)"
    print(f"   storage: {stored}")
    print(f"   server RSS MiB: at start {f['rss_start_mib']}, peak {f['rss_peak_mib']} (sampled max {f['rss_sampled_max_mib']}), baseline after warm-up "
          f"{f['rss_baseline_mib']}, after churn {f['rss_after_churn_mib']}"
          + (f" ({report.rss_growth_mib:+.1f})" if report.rss_growth_mib is not None else ""))
    for sample in f["error_samples"]:
        print(f"   ! {sample}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="ws://HOST:PORT/ws of a running server (default: start one with limits raised for one address)")
    parser.add_argument("--api-key", help="API key (transcripts:read) of --url's server, to check that every turn was stored")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds the sessions are held (default 60)")
    parser.add_argument("--think", default="1,2", help="pause between an answer and the next message, min,max s (default 1,2)")
    parser.add_argument("--churn", type=int, default=1000, help="sessions opened and closed meanwhile (default 1000)")
    parser.add_argument("--churn-concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=float, help="seconds of the warm-up round (default: --duration)")
    parser.add_argument("--warmup-churn", type=int, help="sessions churned in the warm-up (default: --churn)")
    parser.add_argument("--turn-timeout", type=float, default=120.0)
    parser.add_argument("--data-dir", type=Path, help="data dir of the started server, kept (default: a temp dir, removed at the end)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="the first start trains the demo NLU")
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    args = parser.parse_args(argv)
    low, _, high = args.think.partition(",")
    args.think_s = (float(low), float(high or low))
    return args


def server_env(sessions: int, churn_concurrency: int, api_key: str) -> dict[str, str]:
    """Everything comes from 127.0.0.1 here: the per-address limits make room for it."""
    return {
        "VOICEBOT_LIMITS__SESSIONS_PER_CLIENT": str(sessions + churn_concurrency + 50),
        "VOICEBOT_LIMITS__SESSION_TOKENS_PER_MINUTE": "100000",
        "VOICEBOT_PIPELINE__TURN_TIMEOUT_S": "120",  # the point is correctness under load, not the latency
        "VOICEBOT_AUTH__API_KEYS": json.dumps([{"name": "load-test", "key": api_key, "tenant": "*", "scopes": ["transcripts:read"]}]),
    }


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so `kill <our pid>` also stops our server
    config = LoadConfig(sessions=args.sessions, duration_s=args.duration, think_s=args.think_s, churn=args.churn,
                        churn_concurrency=args.churn_concurrency, warmup_s=args.warmup, warmup_churn=args.warmup_churn,
                        turn_timeout_s=args.turn_timeout)
    log = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    server: ServerProcess | None = None
    temp_dir: Path | None = None
    try:
        if args.url:
            url, api_key = args.url, args.api_key
        else:
            api_key = secrets.token_urlsafe(24)
            os.environ.update(server_env(args.sessions, args.churn_concurrency, api_key))  # the server inherits our environment
            if args.data_dir is None:
                temp_dir = Path(tempfile.mkdtemp(prefix="voicebot-load-"))
            server = ServerProcess(args.data_dir or temp_dir)
            log(f"starting server on port {server.port} (data dir {server.data_dir}) ...")
            server.start(args.startup_timeout)
            url = server.ws_url
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        log(f"voicebot load test: {url}; {cores} CPU cores shared by this client, the server and anything else running")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        report = asyncio.run(run_load(url, config, server_pid=server.pid if server else None, api_headers=headers, log=log))
        if not args.json:
            print_report(report)
        print(json.dumps({"bench": "load_test", "cpu_cores": cores, **report.figures}, ensure_ascii=False))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
