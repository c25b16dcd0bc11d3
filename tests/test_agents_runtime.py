"""Hand-offs in a real runtime (real engine, real SQLite): outside the opening hours the customer is
told so in their language; a hand-off on a WebRTC call answers through the channel's
``transfer_at_handoff`` hook with a stored call-back request; the opening-hours rules; and the
storage methods the agents' queue adds, on the built-in backend and the plugin example alike."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import fresh_data_dir
from voicebot.agents.hours import DAYS, OpeningHours
from voicebot.channels.websocket.channel import WebsocketChatChannel
from voicebot.config import ConfigError, Settings
from voicebot.core.events import BotMessage, BotTextChunk, Event
from voicebot.core.runtime import BotRuntime, SessionHandle
from voicebot.core.session import DialogueState
from voicebot.privacy.sealing import Sealer
from voicebot.storage.postgres import PostgresStorage
from voicebot.storage.sqlite import SqliteStorage

in_module_loop = pytest.mark.asyncio(loop_scope="module")


def closed_now() -> list[str]:
    """Opening hours that exclude this moment: one hour, two days from now."""
    later = datetime.now(UTC) + timedelta(days=2)
    return [f"{DAYS[later.weekday()]} 10:00-11:00"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> AsyncIterator[BotRuntime]:
    settings = Settings(storage={"data_dir": fresh_data_dir(tmp_path_factory.mktemp("agents-runtime"), trained_models)},
                        agents={"opening_hours": closed_now(), "timezone": "UTC"})
    runtime = BotRuntime(settings)
    runtime.channels["websocket"] = WebsocketChatChannel(runtime)  # what load_channels does for the served channels
    await runtime.start()
    yield runtime
    await runtime.close()


async def turn(handle: SessionHandle, events: AsyncIterator[Event], text: str) -> tuple[BotMessage, str]:
    """Send ``text``; the final message and the text chunks said before it (what a voice speaks)."""
    await handle.send_text(text)
    chunks: list[str] = []
    async with asyncio.timeout(60):
        async for event in events:
            if isinstance(event, BotTextChunk):
                chunks.append(event.text)
            if isinstance(event, BotMessage):
                return event, " ".join(chunks)
    raise AssertionError("the session ended without an answer")


@in_module_loop
async def test_outside_opening_hours_the_customer_is_told_in_their_language(runtime: BotRuntime) -> None:
    handle = await runtime.open_session("websocket", language="de")
    try:
        message, _ = await turn(handle, handle.events(), "ich möchte mit einem Menschen sprechen")
        assert message.handoff and message.handoff_reason == "asked"
        assert "Öffnungszeiten" in message.text and closed_now()[0] in message.text and "(UTC)" in message.text
        assert "in Kürze" not in message.text  # the usual promise of a quick reply is not made
        assert message.trace["handoff"]["unavailable"] == "closed"
        stored = await runtime.storage.get_conversation(handle.id)
        assert stored is not None and stored["turns"][-1]["bot_text"] == message.text and stored["status"] == "handed_off"
        assert runtime.agents.takes_messages(handle.id)  # what the customer writes now is a message left for the agents
    finally:
        await handle.close()
    queue = await runtime.agents.queue(None)
    assert [(i["conversation_id"], i["kind"], i["reason"]) for i in queue] == [(handle.id, "message", "asked")]
    await runtime.agents.close(handle.id, "alice", None)
    assert await runtime.agents.queue(None) == []


@in_module_loop
async def test_a_webrtc_call_hand_off_offers_a_call_back_stored_for_agents(runtime: BotRuntime) -> None:
    pytest.importorskip("aiortc")
    from voicebot.channels.webrtc.channel import WebRTCChannel

    runtime.channels["webrtc"] = WebRTCChannel(runtime)  # what load_channels does when webrtc is served
    try:
        handle = await runtime.open_session("webrtc", language="en", user_id="caller-9")
        events = handle.events()
        message, spoken = await turn(handle, events, "i want to talk to a human")
        assert message.handoff and "call you back" in message.text and "call you back" in spoken
        assert message.trace["handoff"]["route"] == "callback"
        stored = await runtime.storage.get_conversation(handle.id)
        assert stored is not None and stored["status"] == "callback"
        assert not runtime.agents.takes_messages(handle.id)  # nobody will answer in this call
        await handle.close()
        stored = await runtime.storage.get_conversation(handle.id)
        assert stored is not None and stored["status"] == "callback"  # the end of the call keeps the request
        queue = await runtime.agents.queue("default")
        assert [(i["conversation_id"], i["kind"], i["channel"], i["user_id"]) for i in queue] == [(handle.id, "callback", "webrtc", "caller-9")]
        await runtime.agents.close(handle.id, "alice", "default")
        assert await runtime.agents.queue("default") == []
    finally:
        runtime.channels.pop("webrtc", None)


def test_opening_hours_rules() -> None:
    hours = OpeningHours(["mon-fri 09:00-17:00", "sat 22:00-02:00"], "Europe/Berlin")
    berlin = hours.zone
    assert hours.is_open(datetime(2026, 12, 1, 10, 0, tzinfo=berlin))  # a Tuesday
    assert not hours.is_open(datetime(2026, 12, 1, 17, 0, tzinfo=berlin))
    assert not hours.is_open(datetime(2026, 12, 1, 7, 30, tzinfo=UTC))  # 08:30 in Berlin (UTC+1 in winter)
    assert hours.is_open(datetime(2026, 12, 1, 8, 30, tzinfo=UTC))
    assert hours.is_open(datetime(2026, 12, 6, 1, 0, tzinfo=berlin))  # Sunday 01:00: Saturday's late hours
    assert not hours.is_open(datetime(2026, 12, 6, 22, 30, tzinfo=berlin))
    assert OpeningHours([], "UTC").is_open()
    for bad in (["mon-fri 9-17"], ["someday 09:00-10:00"], ["mon 25:00-26:00"]):
        with pytest.raises(ConfigError, match="agents.opening_hours"):
            OpeningHours(bad, "UTC")
    with pytest.raises(ConfigError, match="agents.timezone"):
        OpeningHours([], "Mars/Olympus")


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        return SqliteStorage(tmp_path / "db.sqlite", Sealer())
    if request.param == "postgres":  # a fresh database on the session's real PostgreSQL (tests/pg_server.py)
        return PostgresStorage(request.getfixturevalue("postgres_url"), Sealer())
    sys.path.insert(0, str(Path(__file__).parent / "plugins"))
    try:
        from memory_storage import MemoryStorage
    finally:
        sys.path.pop(0)
    return MemoryStorage(Sealer())


@in_module_loop
async def test_a_session_of_no_served_channel_keeps_the_bot_answering(runtime: BotRuntime) -> None:
    handle = await runtime.open_session("terminal", language="en")
    try:
        events = handle.events()
        message, _ = await turn(handle, events, "i want to talk to a human")
        assert message.handoff and message.trace["handoff"]["route"] == "unserved"
        assert not runtime.agents.takes_messages(handle.id)
        answer, _ = await turn(handle, events, "where is my order?")  # answered, not forwarded into a queue nobody reads
        assert "order number" in answer.text.lower()
    finally:
        await handle.close()


@in_module_loop
async def test_the_queue_storage_methods(backend) -> None:
    await backend.open()
    try:
        for cid, user, tenant in [("a", "u1", "default"), ("b", "u1", "default"), ("c", "u1", "other"), ("d", None, "default")]:
            await backend.create_conversation(cid, f"token-{cid}-0123456789", "websocket", "en", user, DialogueState("en"), tenant=tenant)
            await asyncio.sleep(0.01)  # distinct creation times for the order below
        assert await backend.set_status("a", "callback") and await backend.set_status("d", "handed_off")
        assert not await backend.set_status("c", "callback", tenant="default")  # another tenant's: as if unknown
        assert not await backend.set_status("nope", "closed")
        waiting = await backend.list_by_status(["handed_off", "callback"], tenant="default")
        assert [c["id"] for c in waiting] == ["d", "a"] and waiting[0]["status"] == "handed_off"
        assert await backend.list_by_status([]) == []
        await backend.end_conversation("a")  # a call-back request survives the end of the call
        assert [c["status"] for c in await backend.list_by_status(["callback"])] == ["callback"]
        assert [c["id"] for c in await backend.list_customer_conversations("u1", tenant="default")] == ["b", "a"]
        assert {c["id"] for c in await backend.list_customer_conversations("u1")} == {"a", "b", "c"}
        assert await backend.list_customer_conversations("u1", limit=1) == (await backend.list_customer_conversations("u1"))[:1]
    finally:
        await backend.close()
