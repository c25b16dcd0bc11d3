"""Hand-off to human agents against a real server: the queue, one holder per conversation, the bot
silent while an agent holds it, agent messages stored redacted and encrypted, the truthful
no-agent message, agent tokens, and the signed, retried hand-off webhook (a real HTTP receiver)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_KEY, ChatClient, ServerProcess, fresh_data_dir
from voicebot.agents.webhook import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE_KEY = "agent-alice-key-0123456789abcdef"
BOB_KEY = "agent-bob-key-0123456789abcdef00"
READER_KEY = "reader-only-key-0123456789abcdef"
WEBHOOK_SECRET = "webhook-secret-0123456789"
API_KEYS = [
    {"name": "tests", "key": ADMIN_KEY, "tenant": "*",
     "scopes": ["transcripts:read", "feedback:write", "domain:manage", "data:erase", "sessions:issue", "agents:act", "agents:issue"]},
    {"name": "alice", "key": ALICE_KEY, "tenant": "default", "scopes": ["agents:act"]},
    {"name": "bob", "key": BOB_KEY, "tenant": "default", "scopes": ["agents:act"]},
    {"name": "reader", "key": READER_KEY, "tenant": "default", "scopes": ["transcripts:read"]},
]
HANDOFF = "i want to talk to a human"


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that answers 500 to the first delivery, 200 afterwards."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures_left = 1
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    status = 500 if receiver.failures_left > 0 else 200
                    receiver.failures_left -= 1
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "answered": status})
                    receiver.arrived.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/handoff"

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def agents_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, receiver: WebhookReceiver) -> Iterator[ServerProcess]:
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("agents-server"), trained_models)
    env = {"VOICEBOT_AUTH__API_KEYS": json.dumps(API_KEYS), "VOICEBOT_AGENTS__WEBHOOK__URL": receiver.url,
           "VOICEBOT_AGENTS__WEBHOOK__SECRET": WEBHOOK_SECRET, "VOICEBOT_AGENTS__WEBHOOK__RETRY_WAIT_S": "0.2",
           "VOICEBOT_AGENTS__PUBLIC_URL": "https://bot.example.com"}
    proc = ServerProcess(data_dir, extra_env=env).start()
    yield proc
    proc.stop()


class Console:
    """An agent's live channel (the websocket the console page keeps open)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: ServerProcess, credential: str) -> Console:
        ws = await connect(f"ws://127.0.0.1:{server.port}/api/agents/live")
        await ws.send(json.dumps({"type": "auth", "token": credential}))
        console = cls(ws)
        hello = await console.expect(lambda e: e["type"] in ("hello", "error"))
        assert hello["type"] == "hello", hello
        return console

    async def _read(self) -> None:
        async for raw in self.ws:
            await self.events.put(json.loads(raw))

    async def expect(self, wanted: Any, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if wanted(event):
                    return event

    async def queue_with(self, conversation_id: str) -> dict[str, Any]:
        event = await self.expect(lambda e: e["type"] == "queue" and any(i["conversation_id"] == conversation_id for i in e["items"]))
        return next(i for i in event["items"] if i["conversation_id"] == conversation_id)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest_asyncio.fixture(loop_scope="module")
async def api(agents_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=agents_server.url, timeout=30) as client:
        yield client


async def hand_off(server: ServerProcess, **start: Any) -> tuple[ChatClient, dict[str, Any]]:
    customer = await ChatClient.open(server.ws_url, **start)
    reply = await customer.say(HANDOFF)
    assert reply["handoff"] is True, reply
    return customer, reply


async def test_no_agent_online_is_said_and_the_message_is_kept(agents_server: ServerProcess, api: httpx.AsyncClient,
                                                               receiver: WebhookReceiver) -> None:
    customer, reply = await hand_off(agents_server)
    try:
        conversation_id = customer.session["session_id"]
        assert "No agent is online" in reply["text"]
        assert "shortly" not in reply["text"]  # no promise of a reply
        assert reply["trace"]["handoff"]["unavailable"] == "no_agent"
        # The customer leaves a message: stored for the agents, the bot does not answer it.
        await customer.send({"type": "message", "text": "Please call me back on +49 151 23456789", "client_id": "m1"})
        ack = await customer.expect("ack")
        assert ack["forwarded"] is True
        queue = (await api.get("/api/agents/queue", headers=auth(ALICE_KEY))).json()
        item = next(i for i in queue["items"] if i["conversation_id"] == conversation_id)
        assert item["reason"] == "asked" and item["kind"] == "chat" and item["holder"] is None
        assert queue["availability"] == {"default": "no_agent"}
        stored = (await api.get(f"/api/agents/conversations/{conversation_id}", headers=auth(ALICE_KEY))).json()
        left = stored["conversation"]["turns"][-1]
        assert left["path"] == "to_agent" and "<PHONE>" in left["user_text"] and "23456789" not in left["user_text"]

        # The hand-off webhook: refused once (500), retried, signed each time, same delivery id.
        deliveries = [r for r in receiver.wait_for(2) if json.loads(r["body"])["conversation_id"] == conversation_id]
        assert [d["answered"] for d in deliveries[:2]] == [500, 200]
        assert deliveries[0]["headers"]["X-Voicebot-Delivery"] == deliveries[1]["headers"]["X-Voicebot-Delivery"]
        for delivery in deliveries[:2]:
            assert verify(WEBHOOK_SECRET.encode(), delivery["body"], delivery["headers"][SIGNATURE_HEADER])
            assert not verify(b"another-secret-0123456789", delivery["body"], delivery["headers"][SIGNATURE_HEADER])
            assert not verify(WEBHOOK_SECRET.encode(), delivery["body"] + b" ", delivery["headers"][SIGNATURE_HEADER])
        payload = json.loads(deliveries[1]["body"])
        assert payload["event"] == "handoff" and payload["reason"] == "asked" and payload["tenant"] == "default"
        assert payload["language"] == "en" and payload["agents_available"] is False
        assert payload["console_url"] == f"https://bot.example.com/console#conversation={conversation_id}"
        assert [line["from"] for line in payload["transcript"]][-2:] == ["customer", "bot"]
        assert payload["transcript"][-2]["text"] == HANDOFF

        closed = await api.post(f"/api/agents/conversations/{conversation_id}/close", headers=auth(ALICE_KEY))
        assert closed.status_code == 200
    finally:
        await customer.close()


async def test_agent_takes_replies_and_hands_back(agents_server: ServerProcess, api: httpx.AsyncClient) -> None:
    alice = await Console.open(agents_server, ALICE_KEY)
    customer, reply = await hand_off(agents_server, user_id="cust-42")
    conversation_id = customer.session["session_id"]
    try:
        assert "Someone will reply shortly" in reply["text"]  # an agent is online: the promise holds
        assert reply["trace"]["handoff"]["agents_available"] is True
        item = await alice.queue_with(conversation_id)
        assert item["reason"] == "asked" and item["connected"] is True and item["user_id"] == "cust-42"

        taken = await api.post(f"/api/agents/conversations/{conversation_id}/take", headers=auth(ALICE_KEY))
        assert taken.status_code == 200 and taken.json()["holder"] == "alice"
        joined = await customer.expect("agent")
        assert joined["status"] == "joined" and joined["agent"] == "alice"
        second = await api.post(f"/api/agents/conversations/{conversation_id}/take", headers=auth(BOB_KEY))
        assert second.status_code == 409 and "alice" in second.json()["detail"]
        bob_reply = await api.post(f"/api/agents/conversations/{conversation_id}/messages", json={"text": "me too"}, headers=auth(BOB_KEY))
        assert bob_reply.status_code == 409

        # The customer writes: forwarded to the agent, and the bot says nothing.
        await customer.send({"type": "message", "text": "where is my order?", "client_id": "c1"})
        assert (await customer.expect("ack"))["forwarded"] is True
        forwarded = await alice.expect(lambda e: e["type"] == "customer_message")
        assert forwarded["conversation_id"] == conversation_id and forwarded["text"] == "where is my order?"

        sent = await api.post(f"/api/agents/conversations/{conversation_id}/messages",
                              json={"text": "Hi, Alice here. Write to me at alice.agent@example.com"}, headers=auth(ALICE_KEY))
        assert sent.status_code == 200
        # The next frame after the forwarded message is the agent's reply: no bot answer came between.
        frame = await customer.recv()
        assert frame["type"] == "agent_message", frame
        assert frame["agent"] == "alice" and "alice.agent@example.com" in frame["text"]

        # Stored with the conversation as from an agent: redacted, and encrypted on disk.
        stored = (await api.get(f"/api/conversations/{conversation_id}", headers=auth(ADMIN_KEY))).json()
        agent_turn = next(t for t in stored["turns"] if t["path"] == "agent")
        assert agent_turn["trace"]["agent"]["name"] == "alice"
        assert "<EMAIL>" in agent_turn["bot_text"] and "example.com" not in agent_turn["bot_text"]
        with sqlite3.connect(agents_server.data_dir / "voicebot.sqlite") as db:
            rows = db.execute("SELECT user_text, bot_text, trace FROM turns WHERE conversation_id = ? AND path IN ('agent', 'to_agent')",
                              (conversation_id,)).fetchall()
        assert len(rows) == 2
        for row in rows:
            for column in row:
                assert column == "" or column.startswith("enc1:"), column
                assert "Alice here" not in column and "my order" not in column

        handed = await api.post(f"/api/agents/conversations/{conversation_id}/handback", headers=auth(ALICE_KEY))
        assert handed.status_code == 200
        notice = await customer.expect("agent")
        assert notice["status"] == "returned" and "virtual assistant" in notice["text"]
        answer = await customer.say("where is my order?")
        assert "order number" in answer["text"].lower() and answer["handoff"] is False
        queue = (await api.get("/api/agents/queue", headers=auth(ALICE_KEY))).json()
        assert conversation_id not in [i["conversation_id"] for i in queue["items"]]
    finally:
        await customer.close()
        await alice.close()


async def test_customer_view_shows_earlier_conversations(agents_server: ServerProcess, api: httpx.AsyncClient) -> None:
    earlier = await ChatClient.open(agents_server.ws_url, user_id="cust-7")
    answer = await earlier.say("where is my order?")
    await earlier.send({"type": "feedback", "rating": 4})
    await earlier.expect("feedback_saved")
    await earlier.close()
    assert answer["trace"]["intent"]["name"] == "order_status"
    customer, _ = await hand_off(agents_server, user_id="cust-7")
    try:
        view = (await api.get(f"/api/agents/conversations/{customer.session['session_id']}", headers=auth(ALICE_KEY))).json()
        assert view["customer"]["user_id"] == "cust-7" and view["customer"]["profile"]["preferred_language"] == "en"
        assert [c["id"] for c in view["customer"]["earlier"]] == [earlier.session["session_id"]]
        assert "order_status" in view["customer"]["earlier"][0]["topics"] and view["customer"]["earlier"][0]["rating"] == 4
        assert view["conversation"]["turns"][-1]["trace"]["response"]["handoff_reason"] == "asked"
        await api.post(f"/api/agents/conversations/{customer.session['session_id']}/close", headers=auth(ALICE_KEY))
    finally:
        await customer.close()


async def test_agent_tokens_and_scopes(agents_server: ServerProcess, api: httpx.AsyncClient) -> None:
    refused = await api.post("/api/agents/tokens", json={"name": "carol"}, headers=auth(ALICE_KEY))
    assert refused.status_code == 403 and "agents:issue" in refused.json()["detail"]
    issued = await api.post("/api/agents/tokens", json={"name": "carol", "tenant": "default"}, headers=auth(ADMIN_KEY))
    assert issued.status_code == 200
    token = issued.json()["token"]
    queue = await api.get("/api/agents/queue", headers=auth(token))
    assert queue.status_code == 200 and queue.json()["agent"] == "carol"
    assert (await api.get("/api/agents/queue", headers=auth(READER_KEY))).status_code == 403
    assert (await api.get("/api/agents/queue", headers=auth(token[:-4] + "AAAA"))).status_code == 401
    # A session token is not an agent token (another audience).
    session_token = (await api.post("/api/session-token", json={})).json()["token"]
    assert (await api.get("/api/agents/queue", headers=auth(session_token))).status_code == 401
    # The live channel refuses a bad credential with a clear message.
    async with connect(f"ws://127.0.0.1:{agents_server.port}/api/agents/live") as ws:
        await ws.send(json.dumps({"type": "auth", "token": READER_KEY}))
        refusal = json.loads(await ws.recv())
        assert refusal["type"] == "error" and "agents:act" in refusal["message"]
    carol = await Console.open(agents_server, token)
    await carol.close()
