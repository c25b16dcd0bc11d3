"""``voicebot serve --workers N``: N serving processes on one machine, one listening socket.

Workers keep nothing between turns that another worker would need: conversations and their
state are in the storage, who serves which conversation and the limits in Redis. So N > 1 needs
both: a storage several processes share (PostgreSQL; one SQLite file is written by one process)
and ``[coordination] redis_url``. Without them N > 1 is refused with the reason.

The supervisor binds the socket once and starts each worker (``voicebot.server.run_worker``) in a
spawned process that inherits it; the kernel spreads new connections over the workers. A worker
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


def supervise(settings: Settings, workers: int) -> None:
    """Run ``workers`` workers until SIGTERM/SIGINT; replace one that dies after it had started."""
    import uvicorn

    check_workers(settings, workers)
    prepare_data_dir(settings)
    config = uvicorn.Config("voicebot.server:create_app", host=settings.server.host, port=settings.server.port)
    sock = config.bind_socket()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    started = [_Worker(settings, [sock]) for _ in range(workers)]
    pool: list[_Worker | None] = list(started)
    log.warning("voicebot supervisor %d: %d workers %s on %s:%d", os.getpid(), workers, [w.pid for w in started],
                settings.server.host, settings.server.port)
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
            pool[index] = _Worker(settings, [sock])
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
    sock.close()
    if failed:
        raise SystemExit(1)
