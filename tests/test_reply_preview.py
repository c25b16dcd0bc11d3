"""The reply preview of a caller's pause (voicebot.voice.preemptive): it says what the turn will
say, changes nothing the turn keeps, runs no action, and its audio is used only for its own clause.

The dialogue part runs on a real in-process runtime with the demo domain and its real actions;
the audio part on ``ReplyPreview`` with a synthesiser that records what it was asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from tests.conftest import fresh_data_dir
from tests.test_faults import Conversation
from voicebot.config import Settings
from voicebot.core.events import BotMessage, BotTextChunk
from voicebot.core.runtime import BotRuntime
from voicebot.core.sentences import first_clause_split
from voicebot.voice.preemptive import Clause, ReplyPreview, first_clause_of_reply

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runtime(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> AsyncIterator[BotRuntime]:
    runtime = BotRuntime(Settings(storage={"data_dir": fresh_data_dir(tmp_path_factory.mktemp("preview"), trained_models)}))
    await runtime.start()
    yield runtime
    await runtime.close()


class Chat(Conversation):
    """A session read turn by turn (tests.test_faults), with the first clause a call would speak."""

    async def first_clause_and_reply(self, text: str) -> tuple[str, BotMessage]:
        turn_id = await self.handle.send_text(text, "en")
        first: str | None = None
        while True:
            event = await asyncio.wait_for(self.queue.get(), 30)
            if isinstance(event, BotTextChunk) and event.turn_id == turn_id and first is None:
                first = first_clause_split(event.text)[0]
            if isinstance(event, BotMessage) and event.turn_id == turn_id:
                assert first is not None, event
                return first, event


def count_actions(runtime: BotRuntime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every demo action that really runs, by name, in order."""
    ran: list[str] = []
    functions = runtime.engine.actions._python

    def counting(name: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(context: Any) -> Any:
            ran.append(name)
            return function(context)
        return run

    for name, function in list(functions.items()):
        monkeypatch.setitem(functions, name, counting(name, function))
    return ran


async def test_a_preview_says_what_the_turn_then_says_and_changes_nothing(runtime: BotRuntime) -> None:
    chat = Chat(await runtime.open_session("webrtc", language="en"))
    try:
        for question in ["What is your return policy?", "I forgot my password.", "How long does shipping take?"]:
            before = chat.handle.session.state.to_dict()
            preview = await first_clause_of_reply(chat.handle, question, "en")
            assert chat.handle.session.state.to_dict() == before  # decided on a copy
            first, reply = await chat.first_clause_and_reply(question)
            assert preview == (first, "en"), (question, reply.text)
    finally:
        await chat.close()


async def test_a_preview_stops_before_any_action_and_the_turn_runs_it_once(runtime: BotRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = count_actions(runtime, monkeypatch)
    chat = Chat(await runtime.open_session("webrtc", language="en"))
    try:
        _, asked = await chat.first_clause_and_reply("Where is my order 12345?")
        assert asked.trace["response"]["path"] == "identify", asked.text  # the owner's e-mail or phone first
        state = chat.handle.session.state.to_dict()
        # The owner's e-mail would run the ownership check, then the lookup: the preview runs neither.
        assert await first_clause_of_reply(chat.handle, "li.wei@example.com", "en") is None
        assert ran == [] and chat.handle.session.state.to_dict() == state
        _, answer = await chat.first_clause_and_reply("li.wei@example.com")
        assert ran == ["verify_order_owner", "lookup_order"], (ran, answer.text)
        assert "12345" in answer.text, answer.text
    finally:
        await chat.close()


class RecordingVoice:
    """A synthesiser that takes ``delay_s`` per clause and records what it was asked and finished."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.asked: list[Clause] = []
        self.finished: list[Clause] = []

    async def __call__(self, text: str, language: str) -> list[np.ndarray]:
        self.asked.append((text, language))
        await asyncio.sleep(self.delay_s)
        self.finished.append((text, language))
        return [np.full(160, len(text), dtype=np.float32)]


async def decided(clause: Clause | None, delay_s: float = 0.01) -> Clause | None:
    await asyncio.sleep(delay_s)
    return clause


async def test_the_preview_audio_is_used_only_for_its_own_clause() -> None:
    voice = RecordingVoice()
    preview = ReplyPreview(decided(("Our return policy is simple.", "en")), voice)
    audio = await preview.audio_for("Our return policy is simple.", "en")
    assert audio is not None and audio[0][0] == len("Our return policy is simple.")
    assert voice.asked == [("Our return policy is simple.", "en")]

    other = ReplyPreview(decided(("Our return policy is simple.", "en")), RecordingVoice(delay_s=5))
    assert await other.audio_for("Our return policy is simple.", "de") is None  # another language: not this clause
    assert await ReplyPreview(decided(None), voice).audio_for("Anything.", "en") is None  # nothing could be previewed


async def test_a_dropped_preview_stops_synthesising_and_gives_nothing() -> None:
    voice = RecordingVoice(delay_s=5)
    preview = ReplyPreview(decided(("Please tell me the e-mail address on the order.", "en")), voice)
    while not voice.asked:
        await asyncio.sleep(0.01)
    preview.cancel()  # the caller went on talking
    assert await preview.audio_for("Please tell me the e-mail address on the order.", "en") is None
    await asyncio.sleep(0.05)
    assert voice.finished == []


async def test_a_failing_preview_leaves_the_turn_to_synthesise() -> None:
    async def broken() -> Clause | None:
        raise RuntimeError("the NLU batcher is closed")

    async def broken_voice(text: str, language: str) -> list[np.ndarray]:
        raise RuntimeError("voice not loaded")

    assert await ReplyPreview(broken(), RecordingVoice()).audio_for("Hello.", "en") is None
    assert await ReplyPreview(decided(("Hello.", "en")), broken_voice).audio_for("Hello.", "en") is None
