"""The agents' desk: the queue of handed-off conversations and who holds each.

A hand-off on a chat puts the conversation in the queue; from then on the customer's messages
are stored and forwarded to the agents, and the bot stays silent, until an agent hands it back
to the bot or closes it. One agent holds a conversation at a time (``take`` is one synchronous
check-and-set on the event loop, so two agents cannot both win). Agents are *online* while a
console is connected to the live channel (``subscribe``); with none online, or outside the
opening hours, the customer is told so at the hand-off instead of being promised a reply.

Everything an agent or a waiting customer writes is stored as a turn of the conversation
(``path`` ``agent``, ``to_agent`` or ``agent_event``), so it is redacted and encrypted like the
bot's turns. The queue of live chats is in this process's memory; call-back requests and
conversations whose customer left while waiting are read from storage (their status).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicebot.agents.hours import OpeningHours
from voicebot.agents.webhook import HandoffWebhook
from voicebot.core.events import AgentMessage, AgentNotice, BotMessage
from voicebot.core.session import HistoryEntry
from voicebot.privacy.masking import redact_turn
from voicebot.storage.base import StoredTurn

if TYPE_CHECKING:
    from voicebot.core.runtime import BotRuntime, SessionHandle
    from voicebot.core.session import Session

log = logging.getLogger(__name__)

WAITING_STATUSES = ("handed_off", "callback")
CONSOLE_BUFFER = 256  # events a console may lag behind before it is dropped (it reconnects)


class DeskError(Exception):
    """A console request that cannot be done; ``http_status`` says how the REST API answers."""

    http_status = 409


class NotQueued(DeskError):
    http_status = 404


class HeldByOther(DeskError):
    """Another agent holds the conversation."""


@dataclass
class Route:
    """How a hand-off goes: ``agents`` (the console queue), ``callback`` or ``transferred`` (the
    channel's own answer), ``unserved`` (a session of no served channel: the terminal chat);
    ``unavailable``: why no agent can answer now (closed, no_agent)."""

    mode: str
    unavailable: str | None = None
    text: str | None = None  # replaces the hand-off message
    language: str | None = None

    def to_trace(self, online: int) -> dict[str, Any]:
        return {"route": self.mode, "agents_available": self.mode == "agents" and self.unavailable is None,
                "unavailable": self.unavailable, "agents_online": online}


@dataclass
class Entry:
    """A live chat in the queue (or held by an agent)."""

    conversation_id: str
    tenant: str
    channel: str
    reason: str | None
    since: float  # when it was handed off (epoch seconds)
    user_id: str | None
    unavailable: str | None
    handle: SessionHandle | None
    holder: str | None = None
    taken_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        handle = self.handle
        return {"conversation_id": self.conversation_id, "tenant": self.tenant, "channel": self.channel, "reason": self.reason,
                "since": self.since, "user_id": self.user_id, "kind": "chat", "connected": handle is not None and not handle.closed,
                "language": handle.session.state.language if handle else None, "holder": self.holder, "taken_at": self.taken_at,
                "unavailable_at_handoff": self.unavailable}


@dataclass(eq=False)  # one per connection: compared (and hashed) by identity
class Subscription:
    """One console connected to the live channel."""

    agent: str
    tenant: str  # "*": every tenant
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(CONSOLE_BUFFER))
    dropped: bool = False

    def sees(self, tenant: str) -> bool:
        return self.tenant in ("*", tenant)


def clean_agent_text(text: str, max_chars: int) -> str:
    cleaned = unicodedata.normalize("NFC", text).strip()
    if not cleaned:
        raise DeskError("the message has no text")
    if len(cleaned) > max_chars:
        raise DeskError(f"messages are limited to {max_chars} characters")
    return cleaned


class AgentDesk:
    def __init__(self, runtime: BotRuntime) -> None:
        self.runtime = runtime
        settings = runtime.settings.agents
        self.settings = settings
        self.hours = OpeningHours(settings.opening_hours, settings.timezone)  # a bad rule fails at start
        self.webhook = HandoffWebhook(settings.webhook) if settings.webhook.url else None
        self.entries: dict[str, Entry] = {}
        self.subscriptions: set[Subscription] = set()
        self._routes: dict[str, Route] = {}  # session id -> the route its hand-off stage chose, until the message is out

    # -- availability ------------------------------------------------------------------------
    def online(self, tenant: str) -> set[str]:
        """Agents with a console connected that reaches ``tenant``."""
        return {s.agent for s in self.subscriptions if s.sees(tenant)}

    def unavailable(self, tenant: str) -> str | None:
        """Why no agent can answer now: ``closed`` (outside the opening hours), ``no_agent``
        (no console connected); None when someone can."""
        if not self.hours.is_open():
            return "closed"
        if not self.online(tenant):
            return "no_agent"
        return None

    # -- the hand-off --------------------------------------------------------------------------
    async def route(self, session: Session, reason: str | None) -> Route:
        """Decide how a hand-off goes, before its message is said: the session's channel first
        (a phone line transfers), else the agents' queue, saying truthfully when nobody is there."""
        engine = self.runtime.engines[session.tenant]
        channel = self.runtime.channels.get(session.channel)
        if channel is None:  # not a served channel (the terminal chat): nobody could answer there, the bot goes on
            route = Route("unserved")
            self._routes[session.id] = route
            return route
        transfer = await channel.transfer_at_handoff(session, reason)
        if transfer is not None:
            route = Route(transfer.mode, text=transfer.text, language=transfer.language)
        else:
            why = self.unavailable(session.tenant)
            route = Route("agents", unavailable=why)
            if why is not None:
                key, values = ("handoff_closed", {"hours": self.hours.describe()}) if why == "closed" else ("handoff_no_agent", {})
                route.text, route.language = engine.locales.message(key, session.state.language, **values)
        self._routes[session.id] = route
        return route

    async def handed_off(self, handle: SessionHandle, message: BotMessage) -> None:
        """The hand-off message is out (stored, sent): queue the conversation, tell the consoles,
        post the webhook."""
        route = self._routes.pop(handle.id, None) or Route("agents", unavailable=self.unavailable(handle.session.tenant))
        session = handle.session
        if route.mode == "callback":
            await self.runtime.storage.set_status(session.id, "callback")
        elif route.mode == "agents":
            self.entries[session.id] = Entry(session.id, session.tenant, session.channel, message.handoff_reason, time.time(),
                                             session.user_id, route.unavailable, handle)
        await self.publish_queue(session.tenant)
        if self.webhook is not None:
            self.runtime._spawn(self._post_webhook(session, message.handoff_reason, route))

    def takes_messages(self, conversation_id: str) -> bool:
        """Whether the customer's messages go to the agents (queued or held), not to the bot."""
        return conversation_id in self.entries

    async def attach(self, handle: SessionHandle) -> None:
        """A resumed session: back in the queue if it was waiting there (or held)."""
        entry = self.entries.get(handle.id)
        if entry is not None:
            entry.handle = handle
            await self.publish_queue(entry.tenant)
            return
        if not handle.session.state.handed_off:
            return
        stored = await self.runtime.storage.get_conversation(handle.id)
        if stored is not None and stored["status"] == "handed_off":
            reason = _last_handoff_reason(stored["turns"])
            self.entries[handle.id] = Entry(handle.id, handle.session.tenant, handle.session.channel, reason, time.time(),
                                            handle.session.user_id, None, handle)
            await self.publish_queue(handle.session.tenant)

    async def session_ended(self, handle: SessionHandle) -> None:
        """The customer went away: a held conversation stays (the agent may still answer; the
        customer reads it on resuming); a waiting one leaves the live queue and is listed from
        storage (status handed_off) until an agent closes it."""
        self._routes.pop(handle.id, None)
        entry = self.entries.get(handle.id)
        if entry is None or entry.handle is not handle:
            return
        entry.handle = None
        if entry.holder is None:
            del self.entries[handle.id]
        await self.publish_queue(entry.tenant)

    async def from_customer(self, handle: SessionHandle, turn_id: str, text: str) -> int:
        """A customer's message while with the agents: stored, forwarded, not answered by the bot."""
        entry = self.entries[handle.id]
        index = await self._store(handle, turn_id, user_text=text, bot_text="", path="to_agent",
                                  trace={"agent": {"from": "customer", "holder": entry.holder}})
        self.publish(entry.tenant, {"type": "customer_message", "conversation_id": handle.id, "text": text, "turn_index": index,
                                    "at": time.time()})
        return index

    # -- what agents do --------------------------------------------------------------------------
    def _entry(self, conversation_id: str, tenant: str | None) -> Entry:
        entry = self.entries.get(conversation_id)
        if entry is None or tenant not in (None, entry.tenant):
            raise NotQueued(f"conversation {conversation_id!r} is not waiting for an agent")
        return entry

    async def take(self, conversation_id: str, agent: str, tenant: str | None) -> Entry:
        entry = self._entry(conversation_id, tenant)
        if entry.holder is not None and entry.holder != agent:
            raise HeldByOther(f"{entry.holder} already holds this conversation")
        if entry.holder is None:
            entry.holder, entry.taken_at = agent, time.time()
            if entry.handle is not None:
                state = entry.handle.session.state
                await entry.handle.pipeline.emit(AgentNotice(session_id=conversation_id, turn_id="", status="joined", agent=agent,
                                                             language=state.language))
            await self.publish_queue(entry.tenant)
        return entry

    def _held(self, conversation_id: str, agent: str, tenant: str | None) -> Entry:
        entry = self._entry(conversation_id, tenant)
        if entry.holder != agent:
            raise HeldByOther(f"{entry.holder} holds this conversation" if entry.holder else "take the conversation first")
        return entry

    async def say(self, conversation_id: str, agent: str, text: str, tenant: str | None) -> int:
        """An agent's reply: stored (marked as from an agent), then sent to the customer's chat."""
        entry = self._held(conversation_id, agent, tenant)
        text = clean_agent_text(text, self.runtime.settings.server.max_message_chars)
        handle = entry.handle
        if handle is None:
            raise DeskError("the customer is not connected; close the conversation or wait for them to come back")
        turn_id = secrets.token_hex(6)
        index = await self._store(handle, turn_id, user_text="", bot_text=text, path="agent", trace={"agent": {"name": agent}})
        await handle.pipeline.emit(AgentMessage(session_id=conversation_id, turn_id=turn_id, text=text, agent=agent, turn_index=index))
        self.publish(entry.tenant, {"type": "agent_message", "conversation_id": conversation_id, "agent": agent, "text": text,
                                    "turn_index": index, "at": time.time()})
        return index

    async def hand_back(self, conversation_id: str, agent: str, tenant: str | None) -> None:
        """The bot answers again from the customer's next message."""
        await self._finish(self._held(conversation_id, agent, tenant), agent, "returned", "agent_returned", "active")

    async def close(self, conversation_id: str, agent: str, tenant: str | None) -> None:
        """Done: out of the queue (a live one, or a stored call-back / left message)."""
        entry = self.entries.get(conversation_id)
        if entry is not None and tenant in (None, entry.tenant):
            await self._finish(self._held(conversation_id, agent, tenant) if entry.holder else entry, agent, "closed", "agent_closed",
                               "closed")
            return
        stored = await self.runtime.storage.get_conversation(conversation_id, tenant=tenant)
        if stored is None or stored["status"] not in WAITING_STATUSES:
            raise NotQueued(f"conversation {conversation_id!r} is not waiting for an agent")
        await self.runtime.storage.set_status(conversation_id, "closed", tenant=tenant)
        await self.publish_queue(stored["tenant"])

    async def _finish(self, entry: Entry, agent: str, status: str, message_key: str, stored_status: str) -> None:
        del self.entries[entry.conversation_id]
        handle = entry.handle
        if handle is not None:
            state = handle.session.state
            # The bot starts afresh: the mood and failures that handed it off are the agent's past.
            state.handed_off, state.failed_turns, state.sentiment_trend, state.handoff_offered = False, 0, 0.0, False
            text, language = handle.engine.locales.message(message_key, state.language)
            turn_id = secrets.token_hex(6)
            await self._store(handle, turn_id, user_text="", bot_text=text, path="agent_event",
                              trace={"agent": {"name": agent, "event": status}}, status=stored_status)
            await handle.pipeline.emit(AgentNotice(session_id=entry.conversation_id, turn_id=turn_id, status=status, agent=agent,
                                                   text=text, language=language))
        else:
            await self.runtime.storage.set_status(entry.conversation_id, stored_status)
        await self.publish_queue(entry.tenant)

    async def _store(self, handle: SessionHandle, turn_id: str, *, user_text: str, bot_text: str, path: str, trace: dict[str, Any],
                     status: str = "handed_off") -> int:
        """One turn of the conversation that the bot did not answer; the state is saved with it."""
        state = handle.session.state
        state.turn_count += 1
        index = state.turn_count
        state.history.append(HistoryEntry(user_text, bot_text, None, state.language))
        del state.history[: -handle.engine.history_limit]
        trace = {**trace, "turn": index, "response": {"path": path, "language": state.language}}
        await self.runtime.storage.save_turn(StoredTurn(handle.id, index, turn_id, user_text, bot_text, state.language, None, path, trace),
                                             state, status)
        return index

    # -- the queue as the consoles see it ------------------------------------------------------
    async def queue(self, tenant: str | None) -> list[dict[str, Any]]:
        """Live chats (waiting or held), then stored call-back requests and chats whose customer
        left while waiting; oldest waiting first."""
        live = [entry.to_dict() for entry in self.entries.values() if tenant in (None, entry.tenant)]
        stored = []
        for conversation in await self.runtime.storage.list_by_status(WAITING_STATUSES, tenant=tenant, limit=100):
            if conversation["id"] in self.entries:
                continue
            found = await self.runtime.storage.get_conversation(conversation["id"])
            stored.append({"conversation_id": conversation["id"], "tenant": conversation["tenant"], "channel": conversation["channel"],
                           "reason": _last_handoff_reason(found["turns"]) if found else None, "since": conversation["updated_at"],
                           "user_id": conversation["user_id"], "kind": "callback" if conversation["status"] == "callback" else "message",
                           "connected": False, "language": conversation["language"], "holder": None, "taken_at": None})
        items = live + stored
        items.sort(key=lambda item: item["since"])
        return items

    def subscribe(self, agent: str, tenant: str) -> Subscription:
        subscription = Subscription(agent, tenant)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def publish(self, tenant: str, payload: dict[str, Any]) -> None:
        for subscription in list(self.subscriptions):
            if not subscription.sees(tenant):
                continue
            try:
                subscription.events.put_nowait(payload)
            except asyncio.QueueFull:  # a console that stopped reading: dropped, it reconnects and reloads
                subscription.dropped = True
                self.subscriptions.discard(subscription)

    async def publish_queue(self, tenant: str) -> None:
        """Every console reaching ``tenant`` gets the queue it sees, whole (simple to render)."""
        watchers = [s for s in self.subscriptions if s.sees(tenant)]
        views: dict[str, list[dict[str, Any]]] = {}
        for subscription in watchers:
            if subscription.tenant not in views:
                views[subscription.tenant] = await self.queue(None if subscription.tenant == "*" else subscription.tenant)
            try:
                subscription.events.put_nowait({"type": "queue", "items": views[subscription.tenant], "now": time.time()})
            except asyncio.QueueFull:
                subscription.dropped = True
                self.subscriptions.discard(subscription)

    # -- the webhook -----------------------------------------------------------------------------
    def console_link(self, conversation_id: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/console#conversation={conversation_id}"

    async def webhook_payload(self, session: Session, reason: str | None, route: Route) -> dict[str, Any]:
        stored = await self.runtime.storage.get_conversation(session.id) or {"turns": []}
        patterns = self.runtime.storage.sealer.patterns
        transcript = []
        for turn in stored["turns"]:
            # Stored text is redacted already when privacy.redact_stored is on; masked here in any case.
            texts, _, _ = redact_turn([turn["user_text"], turn["bot_text"]], None, patterns.for_language(turn["language"]))
            if texts[0]:
                transcript.append({"from": "customer", "text": texts[0], "at": turn["created_at"]})
            if texts[1]:
                transcript.append({"from": "agent" if turn["path"] == "agent" else "bot", "text": texts[1], "at": turn["created_at"]})
        return {"event": "handoff", "conversation_id": session.id, "tenant": session.tenant, "channel": session.channel,
                "reason": reason, "language": session.state.language, "route": route.mode, "agents_available": route.unavailable is None,
                "unavailable": route.unavailable, "console_url": self.console_link(session.id), "transcript": transcript,
                "sent_at": time.time()}

    async def _post_webhook(self, session: Session, reason: str | None, route: Route) -> None:
        assert self.webhook is not None
        try:
            payload = await self.webhook_payload(session, reason, route)
        except Exception:  # storage closing at shutdown: nothing to post
            log.exception("cannot build the hand-off webhook for conversation %s", session.id)
            return
        await self.webhook.deliver(payload)


def _last_handoff_reason(turns: list[dict[str, Any]]) -> str | None:
    for turn in reversed(turns):
        if turn["path"] == "handoff":
            return (turn["trace"].get("response") or {}).get("handoff_reason")
    return None
