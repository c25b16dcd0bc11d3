"""The per-session pipeline runtime: stages connected by bounded queues.

Each stage runs as its own task and handles one event at a time, so events of a session keep their
order end to end, while different turns can be in different stages at once. A full queue makes the
producer wait (back-pressure, never unbounded buffering). A turn can be cancelled while in flight:
its events are dropped everywhere and the stage call working on it is cancelled. Every stage call
is timed into the turn's trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicebot.core.events import ErrorEvent, Event
from voicebot.core.session import Session

log = logging.getLogger(__name__)


@dataclass
class TurnContext:
    """What the stages of one turn share: its trace, timings and cancellation flag."""

    turn_id: str
    session: Session
    user_text: str = ""
    started_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    trace: dict[str, Any] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    stage_started_ns: dict[str, int] = field(default_factory=dict)  # wall clock, for tracing spans

    def add_timing(self, stage: str, seconds: float) -> None:
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + seconds * 1000.0, 3)

    def record(self, section: str, **fields: Any) -> None:
        """Add ``fields`` to one section of the trace, next to what other stages wrote there.

        The trace is the operator's record: stages write it, none reads its input from it (what
        the next stage needs travels on the events)."""
        self.trace.setdefault(section, {}).update(fields)


class Stage(ABC):
    """An async component with one job: it consumes events and emits events.

    ``process`` is called only for event types in ``consumes``; everything else passes straight
    through, so stages compose without knowing about each other.
    """

    name: str = "stage"
    consumes: tuple[type[Event], ...] = ()
    # A call that takes longer than the pipeline's stage timeout is cancelled and handled like a
    # failure (the caller gets the polite fallback). Off for stages that must not be cut midway.
    time_limited: bool = True

    @abstractmethod
    def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        """Yield the events that follow from ``event``."""


ErrorHandler = Callable[[Stage, BaseException, Event, TurnContext], Sequence[Event]]


class StageTimeout(TimeoutError):
    """A stage call ran past the pipeline's stage timeout and was cancelled."""

_CLOSE = object()


class SessionPipeline:
    """Runs a chain of stages for one session."""

    def __init__(self, stages: Sequence[Stage], session: Session, *, queue_size: int = 32, on_error: ErrorHandler | None = None,
                 stage_timeout_s: float | None = None) -> None:
        self.stages = list(stages)
        self.session = session
        self.on_error = on_error
        self.stage_timeout_s = stage_timeout_s
        self._queues: list[asyncio.Queue[Any]] = [asyncio.Queue(maxsize=queue_size) for _ in range(len(self.stages) + 1)]
        self._tasks: list[asyncio.Task[None]] = []
        self.turns: dict[str, TurnContext] = {}
        self._closed = False

    def start(self) -> None:
        for index, stage in enumerate(self.stages):
            task = asyncio.get_running_loop().create_task(
                self._run_stage(stage, self._queues[index], self._queues[index + 1]), name=f"{self.session.id}:{stage.name}"
            )
            self._tasks.append(task)

    def begin_turn(self, turn_id: str, user_text: str = "") -> TurnContext:
        turn = TurnContext(turn_id=turn_id, session=self.session, user_text=user_text)
        self.turns[turn_id] = turn
        return turn

    def finish_turn(self, turn_id: str) -> TurnContext | None:
        return self.turns.pop(turn_id, None)

    def cancel_turn(self, turn_id: str) -> bool:
        """Drop the turn's pending events and cancel the stage call working on it."""
        turn = self.turns.get(turn_id)
        if turn is None or turn.cancelled:
            return False
        turn.cancelled = True
        for task in list(turn.tasks):
            task.cancel()
        return True

    async def submit(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError("pipeline is closed")
        await self._queues[0].put(event)

    async def events(self) -> AsyncIterator[Event]:
        """The pipeline's output, in order, until it is closed."""
        output = self._queues[-1]
        while True:
            item = await output.get()
            if item is _CLOSE:
                return
            turn = self.turns.get(item.turn_id)
            if turn is not None and turn.cancelled and not isinstance(item, ErrorEvent):
                continue
            yield item

    async def emit(self, event: Event) -> None:
        """Put an out-of-band event (a timeout error) straight into the output."""
        await self._queues[-1].put(event)

    async def close(self) -> None:
        """Let queued work drain, then stop every stage task."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._queues[0].put(_CLOSE), timeout=5)
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout=10)
        except TimeoutError:
            log.warning("session %s: pipeline did not drain in time; cancelling", self.session.id)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for turn_id in list(self.turns):
            self.cancel_turn(turn_id)

    async def _run_stage(self, stage: Stage, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]) -> None:
        while True:
            event = await inbox.get()
            if event is _CLOSE:
                await outbox.put(_CLOSE)
                return
            turn = self.turns.get(event.turn_id)
            if turn is not None and turn.cancelled:
                continue
            if turn is None or not isinstance(event, stage.consumes):
                await outbox.put(event)
                continue
            await self._process_one(stage, event, turn, outbox)

    async def _process_one(self, stage: Stage, event: Event, turn: TurnContext, outbox: asyncio.Queue[Any]) -> None:
        async def drive() -> None:
            async for produced in stage.process(event, turn):
                if turn.cancelled:
                    return
                await outbox.put(produced)

        started = time.perf_counter()
        turn.stage_started_ns.setdefault(stage.name, time.time_ns())
        task = asyncio.get_running_loop().create_task(drive())
        turn.tasks.add(task)
        limit = self.stage_timeout_s if stage.time_limited else None
        # Awaited in place (no wrapper task), so the stage's timing is added in the same loop
        # step as before: the persist stage's copy of the trace still sees it.
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                task.cancel()
                raise
            # Only the turn was cancelled; the stage goes on with the next event.
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():  # our limit, not the stage's own timeout
                log.error("stage %s timed out after %.1f s on turn %s of session %s", stage.name, limit, turn.turn_id, turn.session.id)
                exc = StageTimeout(f"{stage.name} took longer than {limit} s")
            else:
                log.exception("stage %s failed on turn %s of session %s", stage.name, turn.turn_id, turn.session.id)
            turn.trace.setdefault("errors", []).append({"stage": stage.name, "error": f"{type(exc).__name__}: {exc}"})
            if self.on_error is not None:
                for replacement in self.on_error(stage, exc, event, turn):
                    await outbox.put(replacement)
        finally:
            turn.tasks.discard(task)
            turn.add_timing(stage.name, time.perf_counter() - started)
