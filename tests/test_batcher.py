"""The shared batcher: batching across callers, max wait, cancellation, error isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from voicebot.core.batching import Batcher, BatchItem


async def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    sizes: list[int] = []

    def run(items: Sequence[BatchItem[int]]) -> list[int]:
        sizes.append(len(items))
        return [item.payload * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=8, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert max(sizes) == 8 and sum(sizes) == 20 and len(sizes) == 3
    await batcher.close()


async def test_a_lone_request_waits_at_most_max_wait() -> None:
    async def run(items: Sequence[BatchItem[str]]) -> list[str]:
        return [item.payload.upper() for item in items]

    batcher: Batcher[str, str] = Batcher(run, max_batch=64, max_wait_s=0.01)
    assert await asyncio.wait_for(batcher.submit("solo"), timeout=1) == "SOLO"
    assert batcher.stats.batches == 1
    await batcher.close()


async def test_one_failing_request_does_not_fail_its_batch_mates() -> None:
    def run(items: Sequence[BatchItem[int]]) -> list[int]:
        if any(item.payload < 0 for item in items):
            raise ValueError("negative input")
        return [item.payload + 1 for item in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=8, max_wait_s=0.05)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in [1, 2, -3, 4, 5]), return_exceptions=True), timeout=10)
    assert results[:2] == [2, 3] and results[3:] == [5, 6]
    assert isinstance(results[2], ValueError)
    assert batcher.stats.failed == 1
    await batcher.close()


async def test_per_item_exceptions_reach_only_their_caller() -> None:
    async def run(items: Sequence[BatchItem[int]]) -> list[int | BaseException]:
        return [KeyError(item.payload) if item.payload == 2 else item.payload for item in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=4, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[1] == 1 and isinstance(results[2], KeyError) and results[3] == 3
    await batcher.close()


async def test_cancelled_request_leaves_the_queue_without_disturbing_others() -> None:
    seen: list[list[int]] = []
    gate = asyncio.Event()

    async def run(items: Sequence[BatchItem[int]]) -> list[int]:
        await gate.wait()
        seen.append([item.payload for item in items if not item.cancelled])
        return [item.payload for item in items]

    batcher: Batcher[int, int] = Batcher(run, max_batch=1, max_wait_s=0)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(batcher.submit(2))
    third = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0.01)
    doomed.cancel()
    gate.set()
    assert await first == 1 and await third == 3
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert [2] not in seen and batcher.stats.cancelled == 1
    await batcher.close()


async def test_runner_returning_wrong_count_is_an_error_for_callers() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: [], max_batch=2, max_wait_s=0.01)
    with pytest.raises(RuntimeError, match="returned 0 results"):
        await batcher.submit(1)
    await batcher.close()
