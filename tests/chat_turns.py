"""One chat turn with a client message id (the retry/fail-over tests of several workers)."""

from __future__ import annotations

from typing import Any

from tests.conftest import ChatClient


async def turn(client: ChatClient, text: str, client_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send a message with its client_id; its ack and its final answer."""
    await client.send({"type": "message", "text": text, "client_id": client_id})
    ack = await client.expect("ack")
    assert ack["client_id"] == client_id
    while True:
        frame = await client.recv()
        if frame["type"] == "message" and frame["turn_id"] == ack["turn_id"]:
            return ack, frame
        assert frame["type"] in ("typing", "chunk"), frame
