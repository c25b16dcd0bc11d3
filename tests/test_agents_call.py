"""A hand-off on a real WebRTC call (an aiortc caller on loopback, speech by Piper): the bot says it
cannot put the call through and that an agent will call back, and the call-back request waits in
the agents' queue, with the caller's conversation, after the call ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ADMIN_KEY, ServerProcess, fresh_data_dir
from tests.test_agents import API_KEYS
from tests.test_voice import VOICE_ENV, connect, pause, speak, until_quiet
from tests.voice_budget import ComputeBudget

CALL_ENV = {**VOICE_ENV, "VOICEBOT_AUTH__API_KEYS": json.dumps(API_KEYS)}


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, budget: ComputeBudget) -> Iterator[ServerProcess]:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("agents-call"), trained_models), extra_env=CALL_ENV)
    yield server.start(timeout=budget.startup())
    server.stop()


async def test_a_hand_off_on_a_call_offers_a_call_back_stored_for_agents(voice_server, voices, budget) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    caller = await connect(voice_server, budget, "en")
    try:
        await caller.say(np.concatenate([pause(0.3), await speak(voices, "I want to talk to a human.", "en"), pause(0.2)]))
        message = (await caller.wait_for("bot_message", timeout=budget.turn()))[0]
        await until_quiet(caller, budget)
        assert message["handoff"] is True and message["trace"]["response"]["handoff_reason"] == "asked"
        assert "call you back" in message["text"] and message["trace"]["handoff"]["route"] == "callback"
        conversation_id = next(e["session_id"] for e in caller.recording.events if e["type"] == "session")
    finally:
        await caller.hang_up()
    queue = httpx.get(f"{voice_server.url}/api/agents/queue", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).json()
    callbacks = [item for item in queue["items"] if item["kind"] == "callback"]
    assert len(callbacks) == 1 and callbacks[0]["channel"] == "webrtc" and callbacks[0]["reason"] == "asked"
    assert callbacks[0]["conversation_id"] == conversation_id
