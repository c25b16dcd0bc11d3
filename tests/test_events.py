"""The typed events carry everything the next stage needs; the trace is only written.

The proof: the same conversation through two real runtimes (real dialogue engine, real stages,
real storage), one as composed, one where every stage call sees a fresh, empty trace instead of
what earlier stages wrote. If any stage read its input from the trace, the blindfolded run would
answer differently; it must give the same replies, chunks, languages and stored turns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.conftest import fresh_data_dir
from voicebot import composition
from voicebot.config import Settings
from voicebot.core.events import BotMessage, BotTextChunk, ErrorEvent, Event
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.core.runtime import BotRuntime, SessionHandle
from voicebot.dialogue.engine import DialogueEngine
from voicebot.pipelines.generation.seq2seq import GenerationResult


class Blindfolded(Stage):
    """Runs a stage on a copy of the turn whose trace starts empty: nothing an earlier stage
    wrote there is in its sight. What it writes goes into the real trace afterwards, so the
    operator's record stays whole."""

    def __init__(self, inner: Stage) -> None:
        self.inner = inner
        self.name = inner.name
        self.consumes = inner.consumes
        self.time_limited = inner.time_limited
        self.calls = 0
        self.records: dict[str, dict[str, Any]] = {}  # turn id -> the real trace, once written

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        self.calls += 1
        blind = dataclasses.replace(turn, trace={})
        try:
            async for produced in self.inner.process(event, blind):
                yield produced
        finally:
            for key, value in blind.trace.items():
                if isinstance(value, dict) and isinstance(turn.trace.get(key), dict):
                    turn.trace[key].update(value)
                else:
                    turn.trace[key] = value
            self.records[turn.turn_id] = turn.trace


class ReferenceGenerator:
    """Stands in for a model: answers with the prompt's reference answer, except that it spells
    out the numbers of the English return policy (so the grounding guard rejects that one)."""

    model_name = "reference-echo"
    precision = "fp32"

    def start_stream(self, prompt: str, max_new_tokens: int) -> tuple[AsyncIterator[str], asyncio.Future[GenerationResult], threading.Event]:
        text = prompt.split("reference: ", 1)[1].rsplit(" | user: ", 1)[0]
        if prompt.startswith("answer in en | intent: policy_question"):
            text = text.replace("30", "thirty").replace("14", "fourteen")
        future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        future.set_result(GenerationResult(text, len(text) // 4, False, 1, 0.0, 0.0, self.model_name))

        async def pieces() -> AsyncIterator[str]:
            for start in range(0, len(text), 4):
                yield text[start:start + 4]

        return pieces(), future, threading.Event()

    def close(self) -> None:
        pass


# (text, language a call's spoken-language ID chose, what it measured)
TURNS: list[tuple[str, str | None, dict[str, Any] | None]] = [
    ("where is my order 12345", None, None),
    ("what is your return policy?", None, None),
    ("Ich habe mein Passwort vergessen, was soll ich jetzt tun?", None, None),
    ("Quelle est votre politique de retour ?", "fr",
     {"reason": "fr 0.91 >= 0.7 (audio + text)", "spoken": {"combined": {"fr": 0.91, "de": 0.09}}}),
]


async def converse(runtime: BotRuntime) -> tuple[list[dict[str, Any]], list[dict[str, Any]], SessionHandle]:
    """Say every turn; return what the customer got per turn and what was stored."""
    handle = await runtime.open_session("terminal", language="en")
    events = handle.events().__aiter__()
    replies: list[dict[str, Any]] = []
    try:
        for text, language, measured in TURNS:
            await handle.send_text(text, language, measured)
            chunks: list[tuple[str, str]] = []
            while True:
                event = await asyncio.wait_for(events.__anext__(), 60)
                if isinstance(event, ErrorEvent):
                    raise AssertionError(event)
                if isinstance(event, BotTextChunk):
                    chunks.append((event.text, event.language))
                if isinstance(event, BotMessage):
                    replies.append({"text": event.text, "language": event.language, "handoff": event.handoff,
                                    "generated_rejected": event.generated_rejected, "chunks": chunks, "trace": event.trace})
                    break
        stored = await runtime.storage.get_conversation(handle.id)
        assert stored is not None
        return replies, list(stored["turns"]), handle
    finally:
        await handle.close()


async def run(data_dir: Path, blindfold: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Blindfolded]]:
    wrapped: list[Blindfolded] = []

    def stages(runtime: BotRuntime, engine: DialogueEngine) -> list[Stage]:
        built = composition.text_stages(runtime, engine)
        if not blindfold:
            return built
        wrapped.extend(Blindfolded(stage) for stage in built)
        return list(wrapped[-len(built):])

    runtime = BotRuntime(Settings(storage={"data_dir": data_dir}), text_stages=stages)
    await runtime.start()
    try:
        runtime.generator = ReferenceGenerator()  # type: ignore[assignment]
        replies, stored, _ = await converse(runtime)
    finally:
        await runtime.close()
    return replies, stored, wrapped


def seen_by_the_customer(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in reply.items() if key != "trace"} for reply in replies]


def stored_facts(turns: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(t["turn_index"], t["user_text"], t["bot_text"], t["language"], t["intent"], t["path"]) for t in turns]


async def test_no_stage_reads_its_input_from_the_trace(tmp_path: Path, trained_models: Path) -> None:
    replies, stored, _ = await run(fresh_data_dir(tmp_path / "sighted", trained_models), blindfold=False)
    blind_replies, blind_stored, wrapped = await run(fresh_data_dir(tmp_path / "blind", trained_models), blindfold=True)

    # The conversation exercised what the events must carry: entities, a rejected and an accepted
    # generated answer, a switch by the text detector and one decided by a call's spoken-language ID.
    order, policy, german, french = (reply["trace"] for reply in replies)
    assert any(entity["value"] == "12345" for entity in order["entities"]) and "12345" in replies[0]["text"]
    assert replies[1]["generated_rejected"] and policy["response"]["used"] == "template" and "thirty" in policy["response"]["generated_text"]
    assert "30 days" in replies[1]["text"] and "thirty" in "".join(text for text, _ in replies[1]["chunks"])
    assert replies[2]["language"] == "de" and german["language"]["switched"]
    assert replies[3]["language"] == "fr" and french["language"]["switched"]
    assert not replies[3]["generated_rejected"] and french["response"]["used"] == "generator" and replies[3]["chunks"]
    assert french["language"]["reason"] == TURNS[3][2]["reason"] and french["language"]["spoken"] == TURNS[3][2]["spoken"]
    assert all(language == reply["language"] for reply in replies for _, language in reply["chunks"])

    # Every stage really ran blindfolded, and nothing it needed was missing.
    assert {stage.name for stage in wrapped} == {"language", "nlu", "dialogue", "handoff", "generation", "response", "storage"}
    assert all(stage.calls >= len(TURNS) for stage in wrapped)
    assert seen_by_the_customer(blind_replies) == seen_by_the_customer(replies)
    assert stored_facts(blind_stored) == stored_facts(stored)
    assert [t["turn_index"] for t in stored] == list(range(1, len(TURNS) + 1))

    # The stages still write the whole record: each blindfolded turn's trace has every section.
    storage = next(stage for stage in wrapped if stage.name == "storage")
    records = [storage.records[turn["turn_id"]] for turn in blind_stored]
    for sighted, record in zip(replies, records, strict=True):
        assert set(record) == set(sighted["trace"])
        assert set(record["response"]) == set(sighted["trace"]["response"])
        assert record["language"] == sighted["trace"]["language"] and record["intent"] == sighted["trace"]["intent"]

