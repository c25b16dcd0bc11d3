"""Load benchmark for the websocket chat channel (docs/protocol.md).

Runs N concurrent scripted conversations (en, zh, es, de, fr) against a voicebot server and prints
figures: turns/s, turn latency percentiles, time to first chunk, errors, and how the mean turn
latency splits over the pipeline stages (``trace.timings_ms`` of each final ``message``).
It never passes or fails on time: it only measures.

By default it starts its own server (``python -m voicebot serve``) on a free 127.0.0.1 port with a
temporary data dir, waits for /health, and stops it by its pid (SIGTERM) at the end, also on
Ctrl-C or errors. With ``--url ws://HOST:PORT/ws`` it uses a running server instead.

    .venv/bin/python bench/chat_load.py                          # 10, 50, 200 sessions
    .venv/bin/python bench/chat_load.py --sessions 10,50 --rounds 1
    .venv/bin/python bench/chat_load.py --url ws://127.0.0.1:8080/ws --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]

# (language, messages): one script per conversation, round-robin over the sessions.
SCRIPTS: list[tuple[str, list[str]]] = [
    ("en", ["hi", "where is my order?", "12345", "how long does a refund take?", "thanks"]),
    ("zh", ["你好", "我的订单到哪了", "24680", "退货政策是什么", "谢谢"]),
    ("es", ["hola", "quiero cancelar mi pedido 67890", "no", "¿cuánto cuesta el envío?", "gracias"]),
    ("de", ["hallo", "mein Internet funktioniert nicht", "WLAN", "danke"]),
    ("fr", ["bonjour", "je n'arrive pas à me connecter à mon compte", "jean.dupont@example.com", "merci"]),
]


# --------------------------------------------------------------------------- server process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_url(ws_url: str) -> str:
    parts = urllib.parse.urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/health"


def get_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local URL)
            return json.loads(response.read().decode())
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class ServerProcess:
    """A ``voicebot serve`` subprocess; stopped by its own pid, never by name."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    startup_s: float = 0.0
    extra_args: list[str] = field(default_factory=list)  # e.g. ["--workers", "2"] (bench/scale_out.py)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the storage and coordination settings

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicebot", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**SATURATION_LIMITS, **os.environ, **self.extra_env},
            # Own session: a terminal Ctrl-C reaches only the benchmark, which then stops the
            # server exactly once, by pid (a second signal would make uvicorn skip its graceful exit).
            start_new_session=True,
        )
        log.close()
        url = health_url(self.ws_url)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early (rc {self.process.returncode}):\n{self.log_tail()}")
            health = get_health(url, timeout=1)
            if health and health.get("status") == "ok":
                self.startup_s = time.monotonic() - started
                return
            time.sleep(0.2)
        raise RuntimeError(f"server did not become healthy in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()  # this pid only
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def rss_mb(self) -> float | None:
        return _proc_status_kb(self.pid, "VmRSS")

    def peak_rss_mb(self) -> float | None:
        return _proc_status_kb(self.pid, "VmHWM")

    def cpu_s(self) -> float | None:
        """utime + stime of the server process (all its threads)."""
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None


def _proc_status_kb(pid: int | None, key: str) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


# --------------------------------------------------------------------------- load


@dataclass
class LevelStats:
    sessions: int
    latencies_ms: list[float] = field(default_factory=list)
    first_chunk_ms: list[float] = field(default_factory=list)
    tail_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    stage_order: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)
    trace_errors: Counter[str] = field(default_factory=Counter)
    wrong_language: int = 0
    handoffs: int = 0
    unfinished_at_deadline: int = 0
    sessions_completed: int = 0
    sessions_cut: int = 0

    def error(self, kind: str, detail: str = "") -> None:
        self.errors[kind] += 1
        if detail and len(self.error_samples) < 8:
            self.error_samples.append(f"{kind}: {detail}"[:300])


# A closed loop from one address measures the server's capacity, not its per-client limits.
SATURATION_LIMITS = {
    "VOICEBOT_LIMITS__MESSAGES_PER_SECOND": "1000", "VOICEBOT_LIMITS__MESSAGE_BURST": "1000",
    "VOICEBOT_LIMITS__SESSIONS_PER_CLIENT": "100000", "VOICEBOT_LIMITS__MAX_SESSIONS": "100000",
    "VOICEBOT_LIMITS__SESSION_TOKENS_PER_MINUTE": "100000",
}


class TurnEnded(Exception):
    pass


_http: dict[int, httpx.AsyncClient] = {}
_token_gates: dict[int, asyncio.Semaphore] = {}
TOKEN_REQUESTS_AT_ONCE = 8  # per event loop; httpcore's pool scans every queued request on each event


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rsplit("/ws", 1)[0]


async def request_session_token(http: httpx.AsyncClient, base: str) -> httpx.Response:
    """POST /api/session-token, anonymous like the chat page. Tried twice: a kept-alive HTTP
    connection the server closes as idle just as a request goes out fails that request (the
    keep-alive race of every HTTP client), and a second token costs nothing."""
    try:
        return await http.post(f"{base}/api/session-token", json={})
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
        return await http.post(f"{base}/api/session-token", json={})


async def authorized_url(ws_url: str) -> str:
    """``ws_url`` with a session token. One HTTP client per event loop: building one per session
    (an SSL context each) would cost the client more CPU than the server spends, on the same cores.
    A few requests at a time: 200 sessions opening at once would queue 200 requests in httpcore's
    pool, whose bookkeeping is quadratic in the queue (measured: 10.2 ms of client CPU per token
    with 400 at once, 2.0 ms through this gate, under load), CPU the load generator takes from the server."""
    loop = id(asyncio.get_running_loop())
    if loop not in _http:
        _http[loop] = httpx.AsyncClient(limits=httpx.Limits(max_connections=TOKEN_REQUESTS_AT_ONCE), timeout=30)
        _token_gates[loop] = asyncio.Semaphore(TOKEN_REQUESTS_AT_ONCE)
    async with _token_gates[loop]:
        response = await request_session_token(_http[loop], http_base(ws_url))
    response.raise_for_status()
    return f"{ws_url}?access_token={response.json()['token']}"


async def run_session(index: int, url: str, args: argparse.Namespace, deadline: float, stats: LevelStats) -> None:
    language, script = SCRIPTS[index % len(SCRIPTS)]
    grace_deadline = deadline + args.grace_seconds
    loop = asyncio.get_running_loop()
    try:
        if args.think_seconds:
            await asyncio.sleep(random.uniform(0, args.think_seconds))  # people do not all arrive at once
        opened = time.perf_counter()
        async with connect(await authorized_url(url), max_size=8 * 1024 * 1024, open_timeout=args.turn_timeout,
                           compression=None if args.no_compression else "deflate",
                           ping_interval=None, close_timeout=5) as ws:

            async def recv(until: float) -> dict[str, Any]:
                remaining = until - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                return json.loads(await asyncio.wait_for(ws.recv(), remaining))

            start: dict[str, Any] = {"type": "start", "user_id": f"bench-{index}"}
            if not args.no_start_language:
                start["language"] = language
            await ws.send(json.dumps(start, ensure_ascii=False))
            open_until = min(loop.time() + args.turn_timeout, grace_deadline)
            while True:
                frame = await recv(open_until)
                if frame.get("type") == "session":
                    break
                if frame.get("type") == "error":
                    stats.error(f"error_frame:{frame.get('code')}", f"on start: {frame.get('message')}")
                    return
            stats.open_ms.append((time.perf_counter() - opened) * 1000.0)

            cut = False
            for _ in range(args.rounds):
                for text in script:
                    if loop.time() >= deadline:
                        cut = True
                        break
                    if not await run_turn(ws, recv, text, language, args, deadline, grace_deadline, stats):
                        cut = True
                        break
                    if args.think_seconds:
                        # A person reads the answer and types the next message; jittered so the
                        # sessions do not march in lock-step.
                        await asyncio.sleep(args.think_seconds * random.uniform(0.5, 1.5))
                if cut:
                    break
            if cut:
                stats.sessions_cut += 1
                return
            # Finish politely: pending answers are sent, then `ended`, then the server closes.
            await ws.send(json.dumps({"type": "end"}))
            end_until = min(loop.time() + args.turn_timeout, grace_deadline)
            try:
                while (await recv(end_until)).get("type") != "ended":
                    pass
                stats.sessions_completed += 1
            except TimeoutError:
                stats.error("timeout:end", "no 'ended' frame")
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        stats.error("timeout:open", "no 'session' frame / connect timed out")
    except Exception as exc:  # noqa: BLE001 - every failure is a figure here
        stats.error(f"exception:{type(exc).__name__}", str(exc))


async def run_turn(ws: Any, recv: Any, text: str, language: str, args: argparse.Namespace, deadline: float,
                   grace_deadline: float, stats: LevelStats) -> bool:
    """One message -> final answer. False when the session should stop (error or deadline)."""
    loop = asyncio.get_running_loop()
    sent = time.perf_counter()
    own_until = loop.time() + args.turn_timeout
    turn_until = min(own_until, grace_deadline)
    await ws.send(json.dumps({"type": "message", "text": text}, ensure_ascii=False))
    turn_id: str | None = None
    first_chunk: float | None = None
    last_chunk: float | None = None
    chunks = 0
    while True:
        try:
            frame = await recv(turn_until)
        except TimeoutError:
            if grace_deadline < own_until:  # cut by --max-seconds + grace, not by the turn timeout
                stats.unfinished_at_deadline += 1
            else:
                stats.error("timeout:turn", f"no answer to {text!r} in {args.turn_timeout:.0f} s")
            return False
        kind = frame.get("type")
        now = time.perf_counter()
        if kind == "ack":
            turn_id = frame.get("turn_id")
            stats.ack_ms.append((now - sent) * 1000.0)
        elif kind == "chunk":
            if turn_id is not None and frame.get("turn_id") != turn_id:
                continue
            chunks += 1
            last_chunk = now
            if first_chunk is None:
                first_chunk = now
        elif kind == "message":
            if turn_id is not None and frame.get("turn_id") != turn_id:
                continue
            stats.latencies_ms.append((now - sent) * 1000.0)
            if first_chunk is not None:
                stats.first_chunk_ms.append((first_chunk - sent) * 1000.0)
            if last_chunk is not None:  # the reply is streamed; the final message waits for its commit
                stats.tail_ms.append((now - last_chunk) * 1000.0)
            stats.chunks.append(chunks)
            trace = frame.get("trace") or {}
            timings = trace.get("timings_ms") or {}
            for stage in timings:
                if stage not in stats.stage_order:
                    stats.stage_order.append(stage)
            stats.timings.append({k: float(v) for k, v in timings.items()})
            stats.paths[str((trace.get("response") or {}).get("path", "?"))] += 1
            for problem in trace.get("errors") or []:
                stats.trace_errors[str(problem.get("stage"))] += 1
                if len(stats.error_samples) < 8:
                    stats.error_samples.append(f"trace error in stage {problem.get('stage')}: {problem.get('error')}"[:300])
            if frame.get("language") and not str(frame["language"]).lower().startswith(language):
                stats.wrong_language += 1
            if frame.get("handoff"):
                stats.handoffs += 1
            return True
        elif kind == "error":
            if turn_id is not None and frame.get("turn_id") not in (None, turn_id):
                continue
            stats.error(f"error_frame:{frame.get('code')}", f"reply to {text!r}: {frame.get('message')}")
            return False
        # typing / pong / anything else: ignore


async def run_level(url: str, sessions: int, args: argparse.Namespace) -> tuple[LevelStats, float]:
    stats = LevelStats(sessions=sessions)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    deadline = loop.time() + args.max_seconds
    tasks = [asyncio.create_task(run_session(i, url, args, deadline, stats)) for i in range(sessions)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return stats, time.perf_counter() - started


# --------------------------------------------------------------------------- figures


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, dtype=float), q)), 1) if values else None


def summarize(stats: LevelStats, elapsed: float, client_cpu_s: float, server: ServerProcess | None,
              server_cpu_s: float | None, active_after: int | None) -> dict[str, Any]:
    turns = len(stats.latencies_ms)
    mean_latency = float(np.mean(stats.latencies_ms)) if turns else 0.0
    stages: list[dict[str, Any]] = []
    staged_total = 0.0
    for stage in stats.stage_order:
        values = np.asarray([t.get(stage, 0.0) for t in stats.timings], dtype=float)
        mean = float(values.mean()) if values.size else 0.0
        staged_total += mean
        seen = sum(1 for t in stats.timings if stage in t)
        stages.append({"stage": stage, "in_traces_pct": round(100.0 * seen / len(stats.timings), 1), "mean_ms": round(mean, 2), "p95_ms": round(float(np.percentile(values, 95)), 2) if values.size else None,
                       "max_ms": round(float(values.max()), 2) if values.size else None,
                       "share_pct": round(100.0 * mean / mean_latency, 1) if mean_latency else None})
    rest = mean_latency - staged_total
    stages.append({"stage": "transport/queueing", "in_traces_pct": None, "mean_ms": round(rest, 2), "p95_ms": None, "max_ms": None,
                   "share_pct": round(100.0 * rest / mean_latency, 1) if mean_latency else None})
    return {
        "sessions": stats.sessions,
        "turns": turns,
        "errors": sum(stats.errors.values()),
        "error_kinds": dict(stats.errors),
        "error_samples": stats.error_samples,
        "unfinished_at_deadline": stats.unfinished_at_deadline,
        "sessions_completed": stats.sessions_completed,
        "sessions_cut": stats.sessions_cut,
        "elapsed_s": round(elapsed, 2),
        "turns_per_s": round(turns / elapsed, 2) if elapsed else None,
        "latency_ms": {"mean": round(mean_latency, 1) if turns else None, "p50": pct(stats.latencies_ms, 50),
                       "p95": pct(stats.latencies_ms, 95), "p99": pct(stats.latencies_ms, 99),
                       "max": round(max(stats.latencies_ms), 1) if turns else None},
        "first_chunk_ms": {"p50": pct(stats.first_chunk_ms, 50), "p95": pct(stats.first_chunk_ms, 95)},
        "last_chunk_to_message_ms": {"p50": pct(stats.tail_ms, 50), "p95": pct(stats.tail_ms, 95)},
        "ack_ms": {"p50": pct(stats.ack_ms, 50), "p95": pct(stats.ack_ms, 95)},
        "session_open_ms": {"p50": pct(stats.open_ms, 50), "p95": pct(stats.open_ms, 95), "max": round(max(stats.open_ms), 1) if stats.open_ms else None},
        "chunks_per_turn": round(float(np.mean(stats.chunks)), 2) if stats.chunks else None,
        "stages": stages,
        "response_paths": dict(stats.paths),
        "trace_stage_errors": dict(stats.trace_errors),
        "wrong_language_replies": stats.wrong_language,
        "handoffs": stats.handoffs,
        "client_cpu_s": round(client_cpu_s, 2),
        "server_cpu_s": round(server_cpu_s, 2) if server_cpu_s is not None else None,
        "server_rss_mb": round(server.rss_mb() or 0, 1) if server else None,
        "server_peak_rss_mb": round(server.peak_rss_mb() or 0, 1) if server else None,
        "server_active_sessions_after": active_after,
    }


def fmt(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def print_level(level: dict[str, Any]) -> None:
    lat, fc = level["latency_ms"], level["first_chunk_ms"]
    print(f"\n== {level['sessions']} sessions: {level['turns']} turns in {level['elapsed_s']} s "
          f"({fmt(level['turns_per_s'])} turns/s), errors {level['errors']}"
          + (f" {level['error_kinds']}" if level["errors"] else "")
          + (f", unfinished at deadline {level['unfinished_at_deadline']}" if level["unfinished_at_deadline"] else ""))
    print(f"   turn latency ms: mean {fmt(lat['mean'])}  p50 {fmt(lat['p50'])}  p95 {fmt(lat['p95'])}  p99 {fmt(lat['p99'])}  max {fmt(lat['max'])}")
    tail = level["last_chunk_to_message_ms"]
    print(f"   first chunk ms: p50 {fmt(fc['p50'])}  p95 {fmt(fc['p95'])}   last chunk -> message ms: p50 {fmt(tail['p50'])}  p95 {fmt(tail['p95'])}")
    print(f"   ack ms: p50 {fmt(level['ack_ms']['p50'])}  p95 {fmt(level['ack_ms']['p95'])}"
          f"   session open ms: p50 {fmt(level['session_open_ms']['p50'])}  p95 {fmt(level['session_open_ms']['p95'])}")
    print(f"   sessions completed {level['sessions_completed']}, cut by --max-seconds {level['sessions_cut']}; "
          f"chunks/turn {fmt(level['chunks_per_turn'])}; paths {level['response_paths']}; handoffs {level['handoffs']}; "
          f"wrong-language replies {level['wrong_language_replies']}")
    cpu = f"   CPU: client {level['client_cpu_s']} s"
    if level["server_cpu_s"] is not None:
        cpu += f", server {level['server_cpu_s']} s ({100 * level['server_cpu_s'] / max(level['elapsed_s'], 1e-9):.0f}% of one core)"
    if level["server_rss_mb"] is not None:
        cpu += f"; server RSS {level['server_rss_mb']} MiB (peak {level['server_peak_rss_mb']} MiB)"
    if level["server_active_sessions_after"] is not None:
        cpu += f"; /health active_sessions after {level['server_active_sessions_after']}"
    print(cpu)
    print(f"   {'stage':<20}{'mean ms':>10}{'p95 ms':>10}{'max ms':>10}{'% of mean turn':>16}{'in % of traces':>16}")
    for stage in level["stages"]:
        print(f"   {stage['stage']:<20}{fmt(stage['mean_ms']):>10}{fmt(stage['p95_ms']):>10}{fmt(stage['max_ms']):>10}"
              f"{fmt(stage['share_pct'], '%'):>16}{fmt(stage['in_traces_pct'], '%'):>16}")
    if level["trace_stage_errors"]:
        print(f"   stage failures reported in traces: {level['trace_stage_errors']}")
    for sample in level["error_samples"]:
        print(f"   ! {sample}")


def print_summary(levels: list[dict[str, Any]]) -> None:
    print("\n== summary")
    header = f"{'sessions':>8}{'turns':>7}{'errors':>7}{'turns/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'1st chunk p50':>15}{'RSS MiB':>9}"
    print(header)
    for level in levels:
        lat = level["latency_ms"]
        print(f"{level['sessions']:>8}{level['turns']:>7}{level['errors']:>7}{fmt(level['turns_per_s']):>9}{fmt(lat['p50']):>9}"
              f"{fmt(lat['p95']):>9}{fmt(lat['p99']):>9}{fmt(level['first_chunk_ms']['p50']):>15}{fmt(level['server_rss_mb']):>9}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="ws://HOST:PORT/ws of a running server (default: start one)")
    parser.add_argument("--sessions", default="10,50,200", help="concurrency levels, run in turn (default 10,50,200)")
    parser.add_argument("--rounds", type=int, default=2, help="times each session repeats its script (default 2)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per level: no new turn starts after this (default 60)")
    parser.add_argument("--grace-seconds", type=float, default=5.0, help="after --max-seconds, how long a turn in flight may finish (default 5)")
    parser.add_argument("--turn-timeout", type=float, default=30.0, help="client-side timeout for one answer (default 30 s)")
    parser.add_argument("--think-seconds", type=float, default=0.0,
                        help="mean pause between a reply and the next message, like a person (default 0: saturate the server)")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between levels (default 1)")
    parser.add_argument("--no-start-language", action="store_true", help="do not send the script's language in 'start'")
    parser.add_argument("--no-compression", action="store_true", help="disable permessage-deflate")
    parser.add_argument("--data-dir", type=Path, help="data dir for the started server (default: a temp dir, removed at the end)")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for /health (default 180)")
    parser.add_argument("--json", action="store_true", help="print only the final JSON line")
    parser.add_argument("--backends", default="",
                        help="NLU backends to compare in one run, each on its own started server, e.g. encoder,charngram "
                             "(default: the server's configured one)")
    args = parser.parse_args(argv)
    args.backend_list = [part.strip() for part in args.backends.split(",") if part.strip()]
    if args.backend_list and args.url:
        parser.error("--backends starts its own servers; it cannot be used with --url")
    try:
        args.levels = [int(part) for part in args.sessions.split(",") if part.strip()]
    except ValueError:
        parser.error("--sessions takes comma-separated integers, e.g. 10,50,200")
    if not args.levels or min(args.levels) < 1 or args.rounds < 1:
        parser.error("--sessions and --rounds must be positive")
    return args


async def bench(args: argparse.Namespace, url: str, server: ServerProcess | None, quiet: bool,
                levels: list[dict[str, Any]]) -> None:
    for number, sessions in enumerate(args.levels):
        if number:
            await asyncio.sleep(args.pause)
        client_cpu = time.process_time()
        server_cpu = server.cpu_s() if server else None
        stats, elapsed = await run_level(url, sessions, args)
        client_cpu = time.process_time() - client_cpu
        server_cpu_used = (server.cpu_s() or 0) - server_cpu if server and server_cpu is not None else None
        await asyncio.sleep(0.5)  # let the server close the sessions before asking /health
        health = await asyncio.to_thread(get_health, health_url(url), 5.0)
        level = summarize(stats, elapsed, client_cpu, server, server_cpu_used, health.get("active_sessions") if health else None)
        levels.append(level)
        if not quiet:
            print_level(level)
            sys.stdout.flush()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # so `kill <our pid>` also stops our server
    if not args.backend_list:
        return run_once(args, None)
    results: dict[str, list[dict[str, Any]]] = {}
    for backend in args.backend_list:
        if not args.json:
            print(f"\n######## nlu.backend = {backend}", flush=True)
        levels: list[dict[str, Any]] = []
        code = run_once(args, backend, levels)
        if code:
            return code
        results[backend] = levels
    print_backend_comparison(results, args.json)
    return 0


def print_backend_comparison(results: dict[str, list[dict[str, Any]]], quiet: bool) -> None:
    """turns/s, p95 and server CPU per turn of each backend per level, and each one's turns/s
    over the last one's (--backends encoder,charngram: the encoder's against the n-gram model's)."""
    names = list(results)
    first = names[-1]
    rows = []
    for index, level in enumerate(results[first]):
        row: dict[str, Any] = {"sessions": level["sessions"]}
        for name in names:
            other = results[name][index]
            cpu = other.get("server_cpu_s")
            row[name] = {"turns_per_s": other["turns_per_s"], "p95_ms": other["latency_ms"]["p95"], "errors": other["errors"],
                         "server_cpu_ms_per_turn": round(1000 * cpu / other["turns"], 2) if cpu and other["turns"] else None}
            if name != first and level["turns_per_s"] and other["turns_per_s"]:
                row[name]["turns_per_s_vs_" + first] = round(other["turns_per_s"] / level["turns_per_s"], 3)
        rows.append(row)
    if not quiet:
        print("\n== NLU backends side by side (same scripts, same levels; one server each, in turn)")
        print(f"{'sessions':>8}" + "".join(f"{name + ' turns/s':>22}{'p95 ms':>9}{'CPU ms/turn':>12}" for name in names) + f"{'ratio':>8}")
        for row in rows:
            ratios = [row[name].get("turns_per_s_vs_" + first) for name in names[:-1]]
            print(f"{row['sessions']:>8}" + "".join(f"{fmt(row[name]['turns_per_s']):>22}{fmt(row[name]['p95_ms']):>9}"
                                                   f"{fmt(row[name]['server_cpu_ms_per_turn']):>12}" for name in names)
                  + "".join(f"{fmt(r):>8}" for r in ratios))
        print(f"ratio: {', '.join(names[:-1])} turns/s over {first}'s (CPU ms/turn: the server process's CPU time per turn)")
    print(json.dumps({"bench": "chat_load_backends", "results": rows}, ensure_ascii=False))


def run_once(args: argparse.Namespace, backend: str | None, levels: list[dict[str, Any]] | None = None) -> int:
    quiet = args.json
    server: ServerProcess | None = None
    temp_dir: Path | None = None
    levels = [] if levels is None else levels
    header: dict[str, Any] = {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        if args.url:
            url = args.url
        else:
            if args.data_dir:
                data_dir = args.data_dir
            else:
                temp_dir = Path(tempfile.mkdtemp(prefix="voicebot-bench-"))
                data_dir = temp_dir
            server = ServerProcess(data_dir, extra_env={"VOICEBOT_NLU__BACKEND": backend} if backend else {})
            if not quiet:
                print(f"starting server: {sys.executable} -m voicebot serve --port {server.port} --data-dir {data_dir} ...", flush=True)
            server.start(args.startup_timeout)
            url = server.ws_url
        health = get_health(health_url(url)) or {}
        header = {
            "url": url, "server_pid": server.pid if server else None,
            "server_startup_s": round(server.startup_s, 1) if server else None,
            "server_version": health.get("version"), "domain": health.get("domain"),
            "cpu_cores": cores, "levels": args.levels, "rounds": args.rounds, "max_seconds": args.max_seconds,
            "turn_timeout_s": args.turn_timeout, "scripts": {lang: len(msgs) for lang, msgs in SCRIPTS},
            "compression": not args.no_compression, "start_language": not args.no_start_language,
            "nlu_backend": backend or "(configured)",
        }
        if not quiet:
            print(f"voicebot chat load: {url}  (server {header['server_version']}, domain {header['domain']}"
                  + (f", pid {server.pid}, started in {server.startup_s:.1f} s" if server else ", external server") + ")")
            print(f"machine: {cores} CPU cores; the benchmark client, the server and its worker threads share them, so the "
                  "client's own CPU use (shown per level) takes from the server's - figures are a lower bound on server capacity.")
            print(f"sessions {args.levels}, rounds {args.rounds}, scripts round-robin over {[lang for lang, _ in SCRIPTS]} "
                  f"({', '.join(f'{lang}: {len(m)} turns' for lang, m in SCRIPTS)}), --max-seconds {args.max_seconds:g} per level, "
                  f"turn timeout {args.turn_timeout:g} s. Figures only: nothing here passes or fails on time.")
            print("stage times are trace.timings_ms (server wall time per stage call, incl. awaits); "
                  "'transport/queueing' = mean turn latency - sum of stage means "
                  "(a stage missing from a trace counts as 0 ms there; see 'in % of traces').")
        asyncio.run(bench(args, url, server, quiet, levels))
        if not quiet:
            print_summary(levels)
        print(json.dumps({"bench": "chat_load", **header, "results": levels}, ensure_ascii=False))
        return 0
    except KeyboardInterrupt:
        print(f"interrupted after {len(levels)} complete level(s)", file=sys.stderr)
        if levels:  # what was measured so far is still worth having
            print(json.dumps({"bench": "chat_load", **header, "interrupted": True, "results": levels}, ensure_ascii=False))
        return 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
            if not quiet and server.log_path and server.log_path.exists():
                warnings = [line for line in server.log_path.read_text(errors="replace").splitlines()
                            if any(word in line for word in ("ERROR", "WARNING", "Traceback"))]
                if warnings:
                    print(f"server log ({server.log_path}): {len(warnings)} warning/error lines, last ones:", file=sys.stderr)
                    for line in warnings[-10:]:
                        print(f"   {line[:300]}", file=sys.stderr)
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
