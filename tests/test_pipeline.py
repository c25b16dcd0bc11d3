"""The per-session pipeline runtime: ordering, bounded queues, turn cancellation, timings, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from voicebot.core.events import BotReply, ErrorEvent, Event, UserText
from voicebot.core.pipeline import SessionPipeline, Stage, TurnContext
from voicebot.core.session import DialogueState, Session


class Upper(Stage):
    name = "upper"
    consumes = (UserText,)

    def __init__(self, delays: dict[str, float] | None = None) -> None:
        self.delays = delays or {}

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, UserText)
        await asyncio.sleep(self.delays.get(event.text, 0))
        if event.text == "boom":
            raise ValueError("stage exploded")
        yield BotReply(session_id=event.session_id, turn_id=event.turn_id, text=event.text.upper(), language="en", path="test")


class Words(Stage):
    """Emits one event per word, slowly: a stand-in for streaming generation."""

    name = "words"
    consumes = (BotReply,)

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, BotReply)
        for word in event.text.split():
            await asyncio.sleep(0.01)
            yield UserText(session_id=event.session_id, turn_id=event.turn_id, text=word)


def make(stages: Sequence[Stage], **kwargs: object) -> SessionPipeline:
    pipeline = SessionPipeline(stages, Session("s1", "test", DialogueState(language="en")), **kwargs)  # type: ignore[arg-type]
    pipeline.start()
    return pipeline


async def collect(pipeline: SessionPipeline, count: int) -> list[Event]:
    events: list[Event] = []
    async for event in pipeline.events():
        events.append(event)
        if len(events) == count:
            break
    return events


async def test_events_of_a_session_keep_their_order_even_when_early_ones_are_slow() -> None:
    pipeline = make([Upper({"first": 0.05})])
    for index, text in enumerate(["first", "second", "third"]):
        pipeline.begin_turn(f"t{index}")
        await pipeline.submit(UserText(session_id="s1", turn_id=f"t{index}", text=text))
    events = await collect(pipeline, 3)
    assert [e.text for e in events] == ["FIRST", "SECOND", "THIRD"]  # type: ignore[attr-defined]
    await pipeline.close()


async def test_cancelling_a_turn_stops_its_stage_work_and_drops_its_events() -> None:
    pipeline = make([Upper(), Words()])
    pipeline.begin_turn("long")
    pipeline.begin_turn("next")
    await pipeline.submit(UserText(session_id="s1", turn_id="long", text=" ".join(["word"] * 50)))
    await pipeline.submit(UserText(session_id="s1", turn_id="next", text="after"))
    received: list[Event] = []

    async def reader() -> None:
        async for event in pipeline.events():
            received.append(event)
            if len(received) == 3:
                assert pipeline.cancel_turn("long")
            if event.turn_id == "next":
                return

    await asyncio.wait_for(reader(), timeout=5)
    long_words = [e for e in received if e.turn_id == "long"]
    assert 3 <= len(long_words) < 10  # stopped long before its 50 words
    assert received[-1].turn_id == "next"  # the next turn was not disturbed
    assert pipeline.turns["long"].timings_ms["words"] > 0
    await pipeline.close()


async def test_stage_error_is_isolated_to_its_turn() -> None:
    def on_error(stage: Stage, exc: BaseException, event: Event, turn: TurnContext) -> list[Event]:
        return [ErrorEvent(session_id=event.session_id, turn_id=turn.turn_id, code="stage_failed", message=str(exc))]

    pipeline = make([Upper()], on_error=on_error)
    for turn_id, text in [("a", "boom"), ("b", "fine")]:
        pipeline.begin_turn(turn_id)
        await pipeline.submit(UserText(session_id="s1", turn_id=turn_id, text=text))
    events = await collect(pipeline, 2)
    assert isinstance(events[0], ErrorEvent) and "exploded" in events[0].message
    assert isinstance(events[1], BotReply) and events[1].text == "FINE"
    assert pipeline.turns["a"].trace["errors"][0]["stage"] == "upper"
    await pipeline.close()


async def test_bounded_queues_make_a_fast_producer_wait() -> None:
    pipeline = make([Upper({str(i): 0.02 for i in range(20)})], queue_size=2)
    submitted = 0

    async def produce() -> None:
        nonlocal submitted
        for i in range(20):
            pipeline.begin_turn(f"t{i}")
            await pipeline.submit(UserText(session_id="s1", turn_id=f"t{i}", text=str(i)))
            submitted += 1

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.05)
    assert submitted < 10  # nobody reads the output: the producer is held back, not buffered
    events = await collect(pipeline, 20)
    await producer
    assert [e.text for e in events] == [str(i) for i in range(20)]  # type: ignore[attr-defined]
    await pipeline.close()


async def test_close_lets_queued_work_finish() -> None:
    pipeline = make([Upper({"slow": 0.05})])
    pipeline.begin_turn("t")
    await pipeline.submit(UserText(session_id="s1", turn_id="t", text="slow"))
    reader = asyncio.create_task(collect(pipeline, 1))
    await pipeline.close()
    assert [e.text for e in await reader] == ["SLOW"]  # type: ignore[attr-defined]
