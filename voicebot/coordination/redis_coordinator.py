"""Coordination of many workers through one Redis (``[coordination] redis_url``).

Keys (all under ``coordination.key_prefix``, default ``voicebot``):

- ``<p>:conversation:<id>``: the worker serving the conversation, with an expiry of
  ``lock_ttl_s``; the worker renews every lock it holds each ``lock_ttl_s / 3``, so a crashed
  worker's conversations may be resumed elsewhere ``lock_ttl_s`` after its last renewal;
  the retention job keeps every conversation with such a key (``held_conversations``);
- ``<p>:sessions`` and ``<p>:sessions:<address>``: sorted sets of live sessions scored by expiry,
  renewed the same way; admitting a session prunes lapsed entries and checks both counts in one
  Lua script, so two workers cannot both take the last place;
- ``<p>:limits...``: the message rate and the session-token rate, moving windows of the `limits`
  library on its Redis storage;
- channel ``<p>:control``: control messages (pub/sub); a sender that waits for them gets one
  reply per worker on ``<p>:reply:<message id>``.

Redis down: admitting a session raises ``CoordinationUnavailable`` (503); live sessions keep their
locks in mind and renew them once Redis is back, and their messages are counted in memory
meanwhile. Needs one Redis (or a Sentinel-managed primary), not Redis Cluster: the scripts touch
several keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from voicebot.access.control import TokenRateLimited
from voicebot.access.limits import LimitExceeded, MessageRateLimiter
from voicebot.config import CoordinationSettings, LimitSettings
from voicebot.coordination.base import ControlHandler, ControlMessage, ConversationInUse, CoordinationUnavailable

log = logging.getLogger(__name__)

UNREACHABLE = (RedisError, OSError, TimeoutError)
POOL_CONNECTIONS = 32  # Redis connections of one worker (one of them listens to the control channel)

# Claim a conversation for the claim ARGV[1] ("<worker>:<n>"): free, or already this worker's (prefix ARGV[3])
# -> 0; else the milliseconds left on the holder's lock.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or string.sub(holder, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 1 then left = 1 end
return left
"""

# Renew this worker's claims (KEYS[i] held by claim ARGV[i + 1]); a lapsed one nobody took is taken again.
# Returns the indexes (1-based) of lost ones.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  elseif not holder then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else
    table.insert(lost, i)
  end
end
return lost
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Admit a session: KEYS[1] all sessions, KEYS[2] (optional) the address's; ARGV member, ttl ms, max, per address.
# 0 admitted, 1 server full, 2 address full. Scores are expiry times on Redis's own clock.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 1 end
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 2 end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"""

# Renew sessions: KEYS[i] the set of ARGV[i + 1] (each session appears under its total and its address key).
_KEEP_SESSIONS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
"""


class RedisClaim:
    """Held under its own token, so the end of a stale session on this worker does not free the
    lock its reconnected successor (also on this worker) took meanwhile."""

    def __init__(self, coordinator: RedisCoordinator, conversation_id: str, token: str) -> None:
        self._coordinator = coordinator
        self.conversation_id = conversation_id
        self.token = token
        self.lost = False
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._coordinator._release_claim(self)


class RedisSlot:
    def __init__(self, coordinator: RedisCoordinator, member: str, client: str | None) -> None:
        self._coordinator = coordinator
        self.member = member
        self.client = client
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._coordinator._release_slot(self)


class RedisCoordinator:
    shared = True

    def __init__(self, settings: CoordinationSettings, limits: LimitSettings, worker_id: str) -> None:
        assert settings.redis_url is not None
        url = settings.redis_url.get_secret_value()
        self.settings = settings
        self.limits = limits
        self.worker_id = worker_id
        self.prefix = settings.key_prefix
        self.ttl_ms = int(settings.lock_ttl_s * 1000)
        # One bounded pool for every Redis call of this worker (the `limits` windows too): a burst of
        # new sessions waits for one of a few connections instead of opening hundreds at once,
        # which on a busy machine is what times out.
        self.pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL_CONNECTIONS, timeout=settings.timeout_s,
                                                             socket_timeout=settings.timeout_s, socket_connect_timeout=settings.timeout_s)
        self.redis = aioredis.Redis(connection_pool=self.pool)
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._admit = self.redis.register_script(_ADMIT)
        self._keep = self.redis.register_script(_KEEP_SESSIONS)
        # The shared moving windows of the `limits` library, and the in-memory one that counts
        # while Redis is unreachable (a live session goes on).
        storage = RedisStorage(f"async+{url}", implementation="redispy", key_prefix=f"{self.prefix}:limits", connection_pool=self.pool)
        self._windows = MovingWindowRateLimiter(storage)
        self._local_rate = MessageRateLimiter.from_settings(limits)
        self._message_item = RateLimitItemPerSecond(self._local_rate.amount, self._local_rate.window_s)
        self._token_item = RateLimitItemPerMinute(limits.session_tokens_per_minute)
        self.claims: dict[str, RedisClaim] = {}
        self.slots: dict[str, RedisSlot] = {}
        self._members = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._on_control: ControlHandler | None = None
        self._on_lost: Callable[[str], Awaitable[None]] | None = None
        self.reachable = True

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, on_control: ControlHandler, on_lost: Callable[[str], Awaitable[None]]) -> None:
        self._on_control, self._on_lost = on_control, on_lost
        if not (await self.check())["ok"]:
            log.warning("coordination: Redis is unreachable at start; new sessions are refused until it answers")
        self._loops = [asyncio.create_task(self._listen(), name="coordination-control"),
                       asyncio.create_task(self._heartbeat(), name="coordination-heartbeat")]

    async def close(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        for claim in list(self.claims.values()):
            claim.release()
        for slot in list(self.slots.values()):
            slot.release()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(*UNREACHABLE):
            await self.redis.aclose()
            await self.pool.aclose()

    async def check(self) -> dict[str, Any]:
        try:
            await self.redis.ping()
        except UNREACHABLE as exc:
            self._set_reachable(False, exc)
            return {"backend": "redis", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:200], "worker": self.worker_id}
        self._set_reachable(True)
        return {"backend": "redis", "ok": True, "worker": self.worker_id, "conversations": len(self.claims)}

    def _set_reachable(self, reachable: bool, exc: BaseException | None = None) -> None:
        if reachable != self.reachable:
            if reachable:
                log.info("coordination: Redis answers again")
            else:
                log.warning("coordination: Redis unreachable (%s: %s); new sessions are refused, live ones go on",
                            type(exc).__name__, exc)
        self.reachable = reachable

    def _unavailable(self, exc: BaseException) -> CoordinationUnavailable:
        self._set_reachable(False, exc)
        return CoordinationUnavailable("the bot cannot reach its coordination service (Redis) and opens no new conversation "
                                       "now; try again shortly", retry_after=5)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- sessions and conversations -------------------------------------------------------------------
    async def admit_session(self, client: str | None) -> RedisSlot:
        member = f"{self.worker_id}:{next(self._members)}"
        keys = [self._key("sessions")] + ([self._key("sessions", client)] if client is not None else [])
        try:
            verdict = await self._admit(keys=keys, args=[member, self.ttl_ms, self.limits.max_sessions, self.limits.sessions_per_client])
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from None
        self._set_reachable(True)
        if verdict == 1:
            raise LimitExceeded("server_busy", f"the bot is at its limit of {self.limits.max_sessions} conversations; try again shortly")
        if verdict == 2:
            raise LimitExceeded("too_many_sessions",
                                f"at most {self.limits.sessions_per_client} conversations may be open from one address; close one first")
        slot = RedisSlot(self, member, client)
        self.slots[member] = slot
        return slot

    def _release_slot(self, slot: RedisSlot) -> None:
        self.slots.pop(slot.member, None)
        keys = [self._key("sessions")] + ([self._key("sessions", slot.client)] if slot.client is not None else [])

        async def remove() -> None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.zrem(key, slot.member)
                    await pipe.execute()
            except UNREACHABLE:
                pass  # it lapses on its own after lock_ttl_s

        self._spawn(remove())

    async def claim_conversation(self, conversation_id: str) -> RedisClaim:
        token = f"{self.worker_id}:{next(self._members)}"
        try:
            left_ms = await self._claim(keys=[self._key("conversation", conversation_id)], args=[token, self.ttl_ms, f"{self.worker_id}:"])
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from None
        if left_ms:
            retry_after = math.ceil(int(left_ms) / 100) / 10
            raise ConversationInUse("this conversation is open in another connection; close it there, or try again in "
                                    f"{retry_after:g} s", retry_after=retry_after)
        claim = RedisClaim(self, conversation_id, token)
        self.claims[conversation_id] = claim
        return claim

    def _release_claim(self, claim: RedisClaim) -> None:
        if self.claims.get(claim.conversation_id) is claim:
            del self.claims[claim.conversation_id]
        if claim.lost:
            return

        async def release() -> None:
            try:
                await self._release(keys=[self._key("conversation", claim.conversation_id)], args=[claim.token])
            except UNREACHABLE:
                pass  # it lapses after lock_ttl_s

        self._spawn(release())

    async def _heartbeat(self) -> None:
        """Renew this worker's locks and session entries; end sessions whose lock another worker took."""
        period = self.settings.lock_ttl_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self._renew_all()
            except UNREACHABLE as exc:
                self._set_reachable(False, exc)
            except Exception:
                log.exception("coordination: renewing locks failed")

    async def _renew_all(self) -> None:
        claims = list(self.claims.values())
        slots = list(self.slots.values())
        async with self.redis.pipeline(transaction=False) as pipe:
            if claims:
                await self._renew(keys=[self._key("conversation", c.conversation_id) for c in claims],
                                  args=[self.ttl_ms, *(c.token for c in claims)], client=pipe)
            if slots:
                keys, members = [], []
                for slot in slots:
                    keys.append(self._key("sessions"))
                    members.append(slot.member)
                    if slot.client is not None:
                        keys.append(self._key("sessions", slot.client))
                        members.append(slot.member)
                await self._keep(keys=keys, args=[self.ttl_ms, *members], client=pipe)
            results = await pipe.execute() if (claims or slots) else []
        if not (claims or slots):
            await self.redis.ping()
        self._set_reachable(True)
        lost = [claims[int(index) - 1] for index in (results[0] if claims else [])]
        for claim in lost:
            claim.lost = True
            self.claims.pop(claim.conversation_id, None)
            log.warning("coordination: conversation %s is now served by another worker; ending it here", claim.conversation_id)
            if self._on_lost is not None:
                self._spawn(self._on_lost(claim.conversation_id))

    async def held_conversations(self) -> set[str]:
        """Every conversation whose lock some worker holds (SCAN over the lock keys, a page at a
        time, so a large deployment does not block Redis)."""
        head = self._key("conversation", "")
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in head) + "*"  # the prefix taken literally
        try:
            return {key.decode()[len(head):] async for key in self.redis.scan_iter(match=pattern, count=1000)}
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from None

    # -- limits ------------------------------------------------------------------------------------------
    async def count_message(self, key: str) -> None:
        try:
            allowed = await self._windows.hit(self._message_item, "message", key)
            if not allowed:
                stats = await self._windows.get_window_stats(self._message_item, "message", key)
        except UNREACHABLE as exc:
            self._set_reachable(False, exc)
            self._local_rate.hit(key)  # live sessions go on; counted here meanwhile
            return
        if allowed:
            return
        retry_after = max(0.01, math.ceil((stats.reset_time - time.time()) * 100) / 100)
        amount, window = self._local_rate.amount, self._local_rate.window_s
        raise LimitExceeded("rate_limited", f"too many messages: at most {amount} in {window} s; wait {retry_after:g} s before "
                                            "sending again", retry_after=retry_after)

    def forget_messages(self, key: str) -> None:
        with contextlib.suppress(RuntimeError):
            self._local_rate.forget(key)  # the Redis windows expire by themselves

    async def count_token_request(self, client: str) -> None:
        try:
            if await self._windows.hit(self._token_item, "session-token", client):
                return
            stats = await self._windows.get_window_stats(self._token_item, "session-token", client)
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from None
        raise TokenRateLimited(max(1.0, stats.reset_time - time.time()))

    # -- control messages -----------------------------------------------------------------------------------
    @property
    def channel(self) -> str:
        return self._key("control")

    async def broadcast(self, message: ControlMessage, *, wait_s: float = 0.0) -> int:
        reply_to = self._key("reply", message.id) if wait_s else None
        data = json.dumps({"kind": message.kind, "payload": message.payload, "origin": message.origin or self.worker_id,
                           "id": message.id, "reply_to": reply_to})
        try:
            reached = int(await self.redis.publish(self.channel, data))
            if reply_to is None:
                return reached
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            acknowledged = 0
            while acknowledged < reached and loop.time() < deadline:
                if await self.redis.blpop([reply_to], timeout=max(0.01, min(self.settings.timeout_s / 2, deadline - loop.time()))):
                    acknowledged += 1
            if acknowledged < reached:
                log.warning("coordination: %s reached %d worker(s), %d answered within %.0f s", message.kind, reached, acknowledged, wait_s)
            with contextlib.suppress(*UNREACHABLE):
                await self.redis.delete(reply_to)
        except UNREACHABLE as exc:
            raise self._unavailable(exc) from None
        return reached

    async def _listen(self) -> None:
        """Control messages for ever; a lost connection is re-subscribed (messages sent while
        Redis was unreachable are not seen: the senders were refused too)."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    item = await pubsub.get_message(timeout=self.settings.timeout_s / 2)
                    if item is not None and item.get("type") == "message":
                        self._spawn(self._handle(item["data"]))
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                self._set_reachable(False, exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _handle(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
            message = ControlMessage(kind=str(data["kind"]), payload=dict(data.get("payload") or {}), origin=str(data.get("origin", "")),
                                     id=str(data.get("id", "")))
        except (ValueError, KeyError, TypeError):
            log.warning("coordination: ignored a malformed control message %r", raw[:200])
            return
        try:
            if self._on_control is not None:
                await self._on_control(message)
        except Exception:
            log.exception("coordination: control message %s failed here", message.kind)
        finally:
            if data.get("reply_to"):
                with contextlib.suppress(*UNREACHABLE):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.rpush(data["reply_to"], self.worker_id)
                        pipe.expire(data["reply_to"], 60)
                        await pipe.execute()
