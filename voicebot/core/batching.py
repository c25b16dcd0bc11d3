"""A shared batcher for model-backed stages.

Requests from every session of a process are gathered into one batch (up to ``max_batch`` items,
waiting at most ``max_wait_s`` after the first one), run in one call, and each caller gets its own
result. A caller that is cancelled leaves the queue (or, if its batch is already running, its
result is dropped and the runner can see ``item.cancelled`` to stop early). An exception raised
for one item reaches only that caller: when the whole batch call fails, the batch is split and
re-run so that only the requests that really fail get the error.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(eq=False)
class BatchItem(Generic[Req]):
    """One request as the batch runner sees it."""

    payload: Req
    future: asyncio.Future[Any]
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def cancelled(self) -> bool:
        return self.future.done()


# Who hears of every batch a batcher of this process starts (name, size, the oldest item's wait
# in seconds): the metrics (voicebot.telemetry) subscribe. A listener must be quick and not raise.
BatchListener = Callable[[str, int, float], None]
batch_listeners: list[BatchListener] = []

BatchRunner = Callable[[Sequence[BatchItem[Req]]], "Sequence[Res | BaseException] | Awaitable[Sequence[Res | BaseException]]"]


@dataclass
class BatcherStats:
    batches: int = 0
    items: int = 0
    cancelled: int = 0
    failed: int = 0
    max_batch_seen: int = 0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class Batcher(Generic[Req, Res]):
    """Gathers requests from many sessions into batches for one runner.

    ``runner`` gets the live items of a batch and returns one result (or exception) per item, in
    order. A synchronous runner is run in a worker thread so the event loop keeps serving.
    """

    def __init__(self, runner: BatchRunner, *, max_batch: int = 16, max_wait_s: float = 0.005, name: str = "batcher") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._runner = runner
        self._async_runner = inspect.iscoroutinefunction(runner)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[BatchItem[Req]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, payload: Req) -> Res:
        """Queue one request and wait for its own result."""
        self._ensure_worker()
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        await self._queue.put(BatchItem(payload, future))
        return await future

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-worker")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError(f"{self.name} closed"))

    async def _gather(self) -> list[BatchItem[Req]]:
        first = await self._queue.get()
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        live = [item for item in batch if not item.cancelled]
        self.stats.cancelled += len(batch) - len(live)
        return live

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(batch))
            waited = time.monotonic() - min(item.enqueued_at for item in batch)
            for listener in list(batch_listeners):
                listener(self.name, len(batch), waited)
            try:
                await self._run_isolated(batch)
            except Exception as exc:  # a bug here must fail these callers, not leave every later one waiting
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _call_runner(self, batch: Sequence[BatchItem[Req]]) -> Sequence[Res | BaseException]:
        if self._async_runner:
            results = await self._runner(batch)
        else:
            results = await asyncio.to_thread(self._runner, batch)
            if inspect.isawaitable(results):
                results = await results
        if len(results) != len(batch):
            raise RuntimeError(f"{self.name} runner returned {len(results)} results for {len(batch)} requests")
        return results

    async def _run_isolated(self, batch: Sequence[BatchItem[Req]]) -> None:
        try:
            results = await self._call_runner(batch)
        except asyncio.CancelledError:
            for item in batch:
                if not item.future.done():
                    item.future.cancel()
            raise
        except Exception as exc:  # the batch as a whole failed: find who caused it
            if len(batch) == 1:
                self.stats.failed += 1
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            middle = len(batch) // 2
            await self._run_isolated(batch[:middle])
            await self._run_isolated(batch[middle:])
            return
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                self.stats.failed += 1
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
