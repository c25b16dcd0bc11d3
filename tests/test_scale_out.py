"""Two `voicebot serve` workers, A and B, on one real PostgreSQL and one real Redis: what a load
balancer in front of them would do is done here by pointing the client at one, then the other.

A conversation moves from a SIGKILLed worker to the other and forgets nothing; a message retried
after the fail-over is answered once; the message rate of a conversation counts across both; an
erasure asked of A ends the customer's live session on B; a second connection to a conversation
served by the other worker gets the documented refusal (conversation_in_use)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.chat_turns import turn
from tests.conftest import ADMIN_HEADERS, ChatClient, ServerProcess, fresh_data_dir, session_token
from tests.deployment_env import deployment_services
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Cluster:
    def __init__(self, a: ServerProcess, b: ServerProcess) -> None:
        self.a, self.b = a, b


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, postgres_server: PostgresServer) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("scale-out")
    with deployment_services(postgres_server, folder) as shared:
        env = {
            **shared,
            # A burst of 6, then one message every 20 s: the rate test spends it on A and B together.
            "VOICEBOT_LIMITS__MESSAGE_BURST": "6", "VOICEBOT_LIMITS__MESSAGES_PER_SECOND": "0.05",
        }
        a = ServerProcess(fresh_data_dir(folder / "a", trained_models), extra_env=env)
        b = ServerProcess(fresh_data_dir(folder / "b", trained_models), extra_env=env)
        try:
            a.start()
            b.start()
            yield Cluster(a, b)
        finally:
            a.stop()
            b.stop()



async def resume_when_free(server: ServerProcess, token: str, patience_s: float = 60) -> tuple[ChatClient, int]:
    """Resume on ``server`` as the chat page does: on ``conversation_in_use`` wait ``retry_after``
    and ask again on the same socket. The client and how many refusals it got first."""
    ws = await connect(f"{server.ws_url}?access_token={await session_token(server.ws_url)}", max_size=4 * 1024 * 1024)
    client = ChatClient(ws)
    refusals = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    while True:
        await client.send({"type": "resume", "token": token})
        frame = await client.recv()
        if frame["type"] == "session":
            client.session = frame
            return client, refusals
        assert frame["type"] == "error" and frame["code"] == "conversation_in_use", frame
        assert frame["retry_after"] > 0 and loop.time() < deadline
        refusals += 1
        await asyncio.sleep(frame["retry_after"])


async def stored_user_texts(server: ServerProcess, session_id: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/api/conversations/{session_id}", headers=ADMIN_HEADERS, timeout=30)
    response.raise_for_status()
    return [t["user_text"] for t in response.json()["turns"]]


async def test_the_message_rate_of_a_conversation_counts_across_workers(cluster: Cluster) -> None:
    on_a = await ChatClient.open(cluster.a.ws_url, language="en")
    for number in range(6):  # the whole burst, on A
        await turn(on_a, "hello", f"rate-{number}")
    token = on_a.session["token"]
    await on_a.close()
    on_b, _ = await resume_when_free(cluster.b, token)
    await on_b.send({"type": "message", "text": "hello again", "client_id": "rate-6"})
    refused = await on_b.expect("error")
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0  # B knows what A counted
    await on_b.close()


async def test_a_second_connection_to_a_conversation_served_elsewhere_is_refused(cluster: Cluster) -> None:
    on_a = await ChatClient.open(cluster.a.ws_url, language="en")
    await turn(on_a, "where is my order 54321?", "held-1")
    token = on_a.session["token"]
    async with connect(f"{cluster.b.ws_url}?access_token={await session_token(cluster.b.ws_url)}") as ws:
        second = ChatClient(ws)
        await second.send({"type": "resume", "token": token})
        refused = await second.expect("error")
        assert refused["code"] == "conversation_in_use" and refused["retry_after"] > 0
        await second.send({"type": "ping"})
        assert (await second.expect("pong"))["type"] == "pong"  # the refused connection stays open to retry
        _, still = await turn(on_a, "thanks", "held-2")  # the first connection is not disturbed
        assert still["text"]
    await on_a.close()  # once it ends, the conversation may be resumed on B
    resumed, _ = await resume_when_free(cluster.b, token)
    assert resumed.session["resumed"] is True and [h["user"] for h in resumed.session["history"]] == ["where is my order 54321?", "thanks"]
    await resumed.close()


async def test_erasure_asked_of_one_worker_ends_the_live_session_on_the_other(cluster: Cluster) -> None:
    on_b = await ChatClient.open(cluster.b.ws_url, language="en", user_id="erase-me")
    await turn(on_b, "where is my order 54321?", "erase-1")
    session_id = on_b.session["session_id"]
    async with httpx.AsyncClient() as http:
        erased = await http.delete(f"{cluster.a.url}/api/customers/erase-me", headers=ADMIN_HEADERS, timeout=60)
        assert erased.status_code == 200 and erased.json()["conversations"] == 1 and erased.json()["turns"] == 1
        ended = await on_b.expect("ended")
        assert ended["reason"] == "erased" and ended["resume"] is False
        with pytest.raises(ConnectionClosed):
            await on_b.recv()
        gone = await http.get(f"{cluster.b.url}/api/conversations/{session_id}", headers=ADMIN_HEADERS, timeout=30)
        assert gone.status_code == 404


async def test_a_worker_killed_mid_turn_loses_nothing_and_answers_nothing_twice(cluster: Cluster) -> None:
    chat = await ChatClient.open(cluster.a.ws_url, language="en")
    token, session_id = chat.session["token"], chat.session["session_id"]
    first_ack, first = await turn(chat, "where is my order 54321?", "fail-1")
    await chat.send({"type": "message", "text": "anna.schmidt@example.com", "client_id": "fail-2"})
    second_ack = await chat.expect("ack")
    cluster.a.stop(signal.SIGKILL)  # mid-turn: acknowledged, maybe answered, maybe stored
    seen_before_kill: list[dict[str, Any]] = []
    with pytest.raises((ConnectionClosed, TimeoutError)):
        while True:
            frame = await chat.recv(timeout=10)
            if frame["type"] == "message":
                seen_before_kill.append(frame)

    resumed, _ = await resume_when_free(cluster.b, token)  # refused while A's lock has not lapsed, then served
    assert resumed.session["resumed"] is True and resumed.session["history"][0]["user"] == "where is my order 54321?"
    # The client did not see (or is not sure of) the answer to fail-2: it sends it again, same client_id.
    retried_ack, retried = await turn(resumed, "anna.schmidt@example.com", "fail-2")
    assert retried_ack["turn_id"] == second_ack["turn_id"]
    assert "54321" in retried["text"] and "Router AX3000" in retried["text"]
    for frame in seen_before_kill:  # answered before the kill: the very same answer, not a second one
        assert frame["turn_id"] == second_ack["turn_id"] and frame["text"] == retried["text"]
    # A message whose answer the client did see, sent again: the stored answer, no new turn.
    again_ack, again = await turn(resumed, "where is my order 54321?", "fail-1")
    assert again_ack["turn_id"] == first_ack["turn_id"] and again["text"] == first["text"] and again["repeated"] is True
    # B goes on with what A knew: the order and the proof of owning it.
    _, confirm = await turn(resumed, "please cancel it", "fail-3")
    assert "54321" in confirm["text"] and confirm["trace"]["state"]["awaiting_confirmation"] == "cancel_order"
    await resumed.close()
    stored = await stored_user_texts(cluster.b, session_id)  # each message once (the e-mail address stored masked)
    assert len(stored) == 3 and stored[0] == "where is my order 54321?" and stored[2] == "please cancel it"
    assert "@" in stored[1] or "EMAIL" in stored[1]
