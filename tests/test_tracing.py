"""OpenTelemetry spans (``[tracing] enabled``): a turn of a real runtime becomes one
``voicebot.turn`` span with a child per pipeline stage, caught by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import fresh_data_dir
from voicebot.config import Settings
from voicebot.core.events import BotMessage
from voicebot.core.runtime import BotRuntime

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

EXPORTER = InMemorySpanExporter()


def global_provider() -> None:
    """The process's provider (``exporter = "none"`` uses it), as an embedding application sets it."""
    if not isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


async def answer(runtime: BotRuntime, text: str) -> BotMessage:
    handle = await runtime.open_session("websocket", language="en")
    events = handle.events()
    turn_id = await handle.send_text(text)
    async for event in events:
        if isinstance(event, BotMessage) and event.turn_id == turn_id:
            await handle.close()
            return event
    raise AssertionError("no answer")


async def test_turn_span_with_a_child_per_stage(tmp_path: Path, trained_models: Path) -> None:
    global_provider()
    EXPORTER.clear()
    settings = Settings(storage={"data_dir": fresh_data_dir(tmp_path, trained_models)}, tracing={"enabled": True, "exporter": "none"})
    runtime = BotRuntime(settings)
    await runtime.start()
    try:
        message = await asyncio.wait_for(answer(runtime, "what's the weather like in Paris tomorrow?"), 60)
    finally:
        await runtime.close()
    spans = EXPORTER.get_finished_spans()
    turns = [s for s in spans if s.name == "voicebot.turn"]
    assert len(turns) == 1
    turn = turns[0]
    assert turn.attributes["voicebot.turn_id"] == message.turn_id
    assert turn.attributes["voicebot.path"] == message.trace["response"]["path"] == "fallback"
    assert turn.attributes["voicebot.channel"] == "websocket"
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == turn.context.span_id}
    assert set(children) == {f"voicebot.stage.{stage}" for stage in message.trace["timings_ms"]}
    assert {"voicebot.stage.nlu", "voicebot.stage.dialogue", "voicebot.stage.storage"} <= set(children)
    for child in children.values():  # inside the turn, in the same trace
        assert child.context.trace_id == turn.context.trace_id
        assert turn.start_time <= child.start_time <= child.end_time


async def test_tracing_is_off_by_default(tmp_path: Path, trained_models: Path) -> None:
    global_provider()
    EXPORTER.clear()
    runtime = BotRuntime(Settings(storage={"data_dir": fresh_data_dir(tmp_path, trained_models)}))
    await runtime.start()
    try:
        await asyncio.wait_for(answer(runtime, "where is my order?"), 60)
    finally:
        await runtime.close()
    assert runtime.telemetry.tracer is None
    assert EXPORTER.get_finished_spans() == ()
