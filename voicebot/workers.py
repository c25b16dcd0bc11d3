"""``voicebot serve --workers N``: N serving processes on one machine, one listening socket.

Workers keep nothing between turns that another worker would need: conversations and their
state are in the storage, who serves which conversation and the limits in Redis. So N > 1 needs
both: a storage several processes share (PostgreSQL; one SQLite file is written by one process)
and ``[coordination] redis_url``. Without them N > 1 is refused with the reason.

The supervisor binds one listening socket per worker on the same port with ``SO_REUSEPORT``
(Linux), hands each to its worker (``voicebot.server.run_worker``, a spawned process) and closes its
own copy, so the kernel spreads new connections evenly over the workers by their addresses. One
socket shared by all workers spread them badly: a burst of connections went to whichever worker
woke first (asyncio accepts up to 100 per wake-up), and that worker was the bottleneck (9.8 against
4.4 CPU-s in one bench/scale_out.py run). Where ``SO_REUSEPORT`` is missing, the workers share one
socket as before. A worker
that dies is replaced (its conversations are resumed by their clients on the others), one that
stopped as asked (``voicebot control shutdown``: it drained and exited 0) is not; SIGTERM or
SIGINT is passed to every worker, which drains as a single server does, and the supervisor exits
when they all have (or when every worker stopped as asked).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from voicebot.config import ConfigError, Settings

log = logging.getLogger("voicebot.workers")

# A worker that dies sooner than this after its start failed to start: restarting it would fail again.
STARTUP_S = 60.0


def multi_worker_problem(settings: Settings) -> str | None:
    """Why this configuration cannot be served by several processes, or None when it can."""
    if settings.storage.backend == "sqlite":
        return ("storage.backend is 'sqlite': one SQLite file is written by one process, so several workers would lose or "
                "block each other's writes. Serve one worker, or configure [storage] backend = \"postgres\" with a url "
                "(VOICEBOT_STORAGE__BACKEND, VOICEBOT_STORAGE__URL) and [coordination] redis_url")
    if settings.coordination.redis_url is None:
        return ("coordination.redis_url is not set: workers agree through Redis on which one serves a conversation, on the "
                "shared limits and on control messages (erasure, reload, shutdown). Set [coordination] redis_url = "
                "\"redis://...\" (VOICEBOT_COORDINATION__REDIS_URL)")
    return None


def check_workers(settings: Settings, workers: int) -> None:
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if workers > 1 and (problem := multi_worker_problem(settings)) is not None:
        raise ConfigError(f"--workers {workers} refused: {problem}")


def prepare_data_dir(settings: Settings) -> None:
    """Create once, before the workers start, what each would otherwise create at the same moment
    in the shared data dir: the generated signing secret and encryption key (when not configured)
    and the tenants' trained intent models."""
    import asyncio

    from voicebot.access.secrets import load_signing_secret
    from voicebot.core.runtime import DEFAULT_TENANT, tenant_domains
    from voicebot.dialogue.engine import DialogueEngine
    from voicebot.plugins import default_registry
    from voicebot.privacy.crypto import TextCipher

    data_dir = settings.storage.data_dir
    load_signing_secret(settings.auth, data_dir)
    TextCipher.from_settings(settings.privacy, data_dir)
    registry = default_registry()
    for tenant, folder in tenant_domains(settings).items():
        tenant_dir = data_dir if tenant == DEFAULT_TENANT else data_dir / "tenants" / tenant
        engine = DialogueEngine.from_folder(folder, settings.nlu, settings.language, tenant_dir, registry=registry)
        asyncio.run(engine.close())


class _Worker:
    def __init__(self, settings: Settings, sockets: list[Any]) -> None:
        from voicebot.server import run_worker

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or event loop of the parent
        self.process: BaseProcess = context.Process(target=run_worker, args=(settings, sockets), daemon=False)
        self.process.start()
        self.started = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def terminate(self) -> None:
        if self.process.is_alive() and self.process.pid is not None:
            os.kill(self.process.pid, signal.SIGTERM)  # this worker only: it drains and says goodbye


class Listener:
    """The workers' listening sockets on one host and port: one per worker with ``SO_REUSEPORT``,
    else one shared by all."""

    BACKLOG = 2048  # uvicorn's default

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.reuse_port = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
        # The first socket is bound without SO_REUSEPORT and closed: it fails if anything listens on
        # the port, even another voicebot with SO_REUSEPORT (which would otherwise share our traffic).
        probe = self._bind(port, reuse_port=False)
        self.port = probe.getsockname()[1]  # port 0: the one the kernel chose, for every worker
        if self.reuse_port:
            probe.close()
            self._shared: socket.socket | None = None
        else:
            self._shared = probe

    def _bind(self, port: int, reuse_port: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, port))
            sock.listen(self.BACKLOG)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.host}:{port}: {exc.strerror or exc}") from exc
        sock.set_inheritable(True)
        return sock

    def start_worker(self, settings: Settings) -> _Worker:
        """A worker on its own socket (closed here once the worker has its copy, so that when the
        worker dies the kernel stops handing that socket connections), or on the shared one."""
        if self._shared is not None:
            return _Worker(settings, [self._shared])
        sock = self._bind(self.port, reuse_port=True)
        try:
            return _Worker(settings, [sock])
        finally:
            sock.close()  # the spawned worker got its own duplicate of the descriptor at start

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()


def supervise(settings: Settings, workers: int) -> None:
    """Run ``workers`` workers until SIGTERM/SIGINT; replace one that dies after it had started."""
    check_workers(settings, workers)
    prepare_data_dir(settings)
    listener = Listener(settings.server.host, settings.server.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    started = [listener.start_worker(settings) for _ in range(workers)]
    pool: list[_Worker | None] = list(started)
    log.warning("voicebot supervisor %d: %d workers %s on %s:%d", os.getpid(), workers, [w.pid for w in started],
                settings.server.host, listener.port)
    failed = False
    while not stop.wait(0.5):
        for index, worker in enumerate(pool):
            if worker is None or worker.process.is_alive():
                continue
            if worker.process.exitcode == 0:  # it was asked to stop (voicebot control shutdown) and drained
                log.warning("worker %s stopped as asked: not replaced", worker.pid)
                pool[index] = None
                continue
            if time.monotonic() - worker.started < STARTUP_S:
                log.error("worker %s exited (code %s) while starting: stopping every worker", worker.pid, worker.process.exitcode)
                failed = True
                stop.set()
                break
            log.error("worker %s died (code %s): starting a new one", worker.pid, worker.process.exitcode)
            pool[index] = listener.start_worker(settings)
        if not any(pool):
            log.warning("every worker stopped as asked: the supervisor exits")
            break
    running = [worker for worker in pool if worker is not None]
    for worker in running:
        worker.terminate()
    grace = settings.server.shutdown_grace_s + 20
    deadline = time.monotonic() + grace
    for worker in running:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            log.error("worker %s did not stop within %.0f s: killed", worker.pid, grace)
            worker.process.kill()
            worker.process.join()
    listener.close()
    if failed:
        raise SystemExit(1)
