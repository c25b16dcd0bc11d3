"""Coordination of several workers on a real Redis (tests/redis_server.py): two coordinators in
one test stand for two worker processes; each has its own connections and worker id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.redis_server import RedisServer, redis_server  # noqa: F401 - the fixture
from voicebot.access.control import TokenRateLimited
from voicebot.access.limits import LimitExceeded
from voicebot.config import CoordinationSettings, LimitSettings
from voicebot.coordination import ControlMessage, ConversationInUse, CoordinationUnavailable
from voicebot.coordination.redis_coordinator import RedisCoordinator

pytestmark = pytest.mark.asyncio


class Worker:
    """A coordinator and what its runtime would have been told."""

    def __init__(self, url: str, name: str, limits: LimitSettings, ttl_s: float = 1.0) -> None:
        self.coordinator = RedisCoordinator(CoordinationSettings(redis_url=url, lock_ttl_s=ttl_s, timeout_s=0.5), limits, name)
        self.controls: list[ControlMessage] = []
        self.lost: list[str] = []

    async def on_control(self, message: ControlMessage) -> None:
        await asyncio.sleep(0.05)  # some work (ending sessions): a waiting sender must wait for it
        self.controls.append(message)

    async def on_lost(self, conversation_id: str) -> None:
        self.lost.append(conversation_id)

    async def start(self) -> Worker:
        await self.coordinator.start(self.on_control, self.on_lost)
        return self


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> None:
    """Until ``check()`` is true; the bound is generous (a loaded machine), never a measurement."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await _value(check()):
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _value(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


LIMITS = LimitSettings(max_sessions=3, sessions_per_client=2, message_burst=3, messages_per_second=0.1, session_tokens_per_minute=2)


@pytest_asyncio.fixture
async def workers(redis_server: RedisServer) -> AsyncIterator[tuple[Worker, Worker]]:  # noqa: F811
    a = await Worker(redis_server.url, "worker-a", LIMITS).start()
    b = await Worker(redis_server.url, "worker-b", LIMITS).start()
    yield a, b
    await a.coordinator.close()
    await b.coordinator.close()


async def test_a_conversation_is_served_by_one_worker_at_a_time(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    claim = await a.coordinator.claim_conversation("conv-1")
    with pytest.raises(ConversationInUse) as refused:
        await b.coordinator.claim_conversation("conv-1")
    assert refused.value.code == "conversation_in_use" and refused.value.http_status == 409
    assert refused.value.retry_after is not None and 0 < refused.value.retry_after <= 1.0
    await asyncio.sleep(2.5)  # longer than the lock's 1 s expiry: A's heartbeat keeps renewing it
    with pytest.raises(ConversationInUse):
        await b.coordinator.claim_conversation("conv-1")
    claim.release()
    await eventually(lambda: _claims(b, "conv-1"))
    assert a.lost == [] and b.lost == []


async def _claims(worker: Worker, conversation_id: str) -> bool:
    try:
        await worker.coordinator.claim_conversation(conversation_id)
    except ConversationInUse:
        return False
    return True


async def test_a_dead_workers_conversation_can_be_resumed_elsewhere(redis_server: RedisServer) -> None:  # noqa: F811
    crashed = Worker(redis_server.url, "worker-crashed", LIMITS)  # never started: no heartbeat, as after a SIGKILL
    other = await Worker(redis_server.url, "worker-b", LIMITS).start()
    try:
        await crashed.coordinator.claim_conversation("conv-2")
        slot = await crashed.coordinator.admit_session("10.0.0.1")
        assert slot is not None
        with pytest.raises(ConversationInUse):
            await other.coordinator.claim_conversation("conv-2")
        await eventually(lambda: _claims(other, "conv-2"))  # the lock lapsed
        # The dead worker's session lapsed too: its place in the counts is free again.
        for _ in range(2):
            await other.coordinator.admit_session("10.0.0.1")
    finally:
        await other.coordinator.close()
        await crashed.coordinator.redis.aclose()


async def test_a_worker_whose_lock_was_taken_ends_the_session(workers: tuple[Worker, Worker]) -> None:
    a, _ = workers
    await a.coordinator.claim_conversation("conv-3")
    await a.coordinator.redis.set("voicebot:conversation:conv-3", "worker-elsewhere", px=5000)  # taken after a lapse
    await eventually(lambda: a.lost == ["conv-3"])


async def test_session_counts_are_shared(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    first = await a.coordinator.admit_session("10.0.0.1")
    await b.coordinator.admit_session("10.0.0.1")
    with pytest.raises(LimitExceeded) as per_address:
        await a.coordinator.admit_session("10.0.0.1")  # 2 per address, counted over both workers
    assert per_address.value.code == "too_many_sessions"
    await b.coordinator.admit_session("10.0.0.2")
    with pytest.raises(LimitExceeded) as full:
        await a.coordinator.admit_session("10.0.0.3")  # 3 in all
    assert full.value.code == "server_busy"
    first.release()
    await eventually(lambda: _admits(b, "10.0.0.3"))


async def _admits(worker: Worker, client: str) -> bool:
    try:
        await worker.coordinator.admit_session(client)
    except LimitExceeded:
        return False
    return True


async def test_message_rate_and_session_tokens_count_across_workers(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    await a.coordinator.count_message("conv-4")
    await b.coordinator.count_message("conv-4")
    await a.coordinator.count_message("conv-4")
    with pytest.raises(LimitExceeded) as refused:
        await b.coordinator.count_message("conv-4")  # the burst of 3 was spent on both workers together
    assert refused.value.code == "rate_limited" and refused.value.retry_after is not None and refused.value.retry_after > 0
    await b.coordinator.count_message("conv-5")  # another conversation has its own budget
    await a.coordinator.count_token_request("10.0.0.9")
    await b.coordinator.count_token_request("10.0.0.9")
    with pytest.raises(TokenRateLimited):
        await a.coordinator.count_token_request("10.0.0.9")


async def test_control_messages_reach_every_worker_and_the_sender_waits(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    await eventually(lambda: _subscribers(a, 2))
    reached = await a.coordinator.broadcast(ControlMessage("end_customer_sessions", {"user_id": "alice"}), wait_s=10)
    assert reached == 2
    # Waiting meant: both had handled it when broadcast returned (each handler takes a while).
    assert [m.kind for m in a.controls] == ["end_customer_sessions"] and [m.payload for m in b.controls] == [{"user_id": "alice"}]
    assert b.controls[0].origin == "worker-a"


async def _subscribers(worker: Worker, count: int) -> bool:
    numsub = await worker.coordinator.redis.pubsub_numsub(worker.coordinator.channel)
    return bool(numsub and numsub[0][1] >= count)


async def test_redis_down_refuses_new_sessions_and_counts_live_messages_here(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    a = await Worker(server.url, "worker-a", LIMITS).start()
    b = await Worker(server.url, "worker-b", LIMITS).start()
    try:
        await a.coordinator.admit_session(None)
        claim = await a.coordinator.claim_conversation("conv-6")
        server.stop()
        with pytest.raises(CoordinationUnavailable) as refused:
            await a.coordinator.admit_session(None)
        assert refused.value.http_status == 503 and refused.value.code == "coordination_unavailable"
        with pytest.raises(CoordinationUnavailable):
            await b.coordinator.claim_conversation("conv-7")
        with pytest.raises(CoordinationUnavailable):
            await b.coordinator.count_token_request("10.0.0.1")
        await a.coordinator.count_message("conv-6")  # a live session goes on, counted in memory
        for _ in range(2):
            await a.coordinator.count_message("conv-6")
        with pytest.raises(LimitExceeded):
            await a.coordinator.count_message("conv-6")  # ... and still limited
        assert (await a.coordinator.check())["ok"] is False
        server.start()  # Redis is back on its port (empty: no persistence)
        await eventually(lambda: _checks(a))
        await eventually(lambda: _holds(a, "conv-6"))  # the live session's lock was taken again
        assert claim.lost is False and a.lost == []
        await eventually(lambda: _subscribers(a, 2))  # both listen again
        assert await a.coordinator.broadcast(ControlMessage("reload_domain", {"tenant": "default"}), wait_s=10) == 2
    finally:
        await a.coordinator.close()
        await b.coordinator.close()
        server.stop()


async def _checks(worker: Worker) -> bool:
    return bool((await worker.coordinator.check())["ok"])


async def _holds(worker: Worker, conversation_id: str) -> bool:
    holder = await worker.coordinator.redis.get(f"voicebot:conversation:{conversation_id}")
    return holder is not None and holder.decode().startswith(f"{worker.coordinator.worker_id}:")


async def test_a_reconnect_on_the_same_worker_keeps_the_lock(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    first = await a.coordinator.claim_conversation("conv-8")
    first.release()  # the stale connection's session ends...
    await a.coordinator.claim_conversation("conv-8")  # ...as the reconnected one takes the conversation here
    await asyncio.gather(*a.coordinator._tasks)  # the first session's release has run by now
    with pytest.raises(ConversationInUse):
        await b.coordinator.claim_conversation("conv-8")


async def test_held_conversations_name_every_workers_live_ones_of_this_deployment_only(redis_server: RedisServer) -> None:  # noqa: F811
    """What the retention job keeps: the conversations any worker of the deployment serves now. A
    key prefix with glob characters is taken literally, so a neighbouring deployment's locks on the
    same Redis are not counted."""
    def worker(name: str, prefix: str) -> RedisCoordinator:
        return RedisCoordinator(CoordinationSettings(redis_url=redis_server.url, key_prefix=prefix, lock_ttl_s=5, timeout_s=0.5), LIMITS, name)

    a, b, neighbour = worker("a", "shop[1]*"), worker("b", "shop[1]*"), worker("n", "shop1x")
    try:
        on_a = await a.claim_conversation("conv-a")
        await b.claim_conversation("conv-b")
        await neighbour.claim_conversation("conv-n")
        assert await a.held_conversations() == {"conv-a", "conv-b"} == await b.held_conversations()
        on_a.release()
        await eventually(lambda: _held_is(b, {"conv-b"}))
    finally:
        for coordinator in (a, b, neighbour):
            await coordinator.close()
    unreachable = RedisCoordinator(CoordinationSettings(redis_url="redis://127.0.0.1:1/0", timeout_s=0.5), LIMITS, "down")
    with pytest.raises(CoordinationUnavailable):  # unknown, not empty: the retention run then deletes nothing
        await unreachable.held_conversations()
    await unreachable.close()


async def _held_is(worker: RedisCoordinator, expected: set[str]) -> bool:
    return await worker.held_conversations() == expected
