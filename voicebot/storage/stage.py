"""Pipeline stage: commit each turn and the state after it before the final message goes out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from voicebot.core.events import BotMessage, BotReply, Event
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.storage.base import Storage, StoredTurn


class PersistStage(Stage):
    """Commits the turn and the state after it; only then is the final message released."""

    name = "storage"
    consumes = (BotReply,)
    # A commit runs in the storage thread and cannot be taken back by cancelling the call: cut
    # short, the turn could be stored while the customer is told it was not. The backend bounds
    # it instead (SQLite's busy timeout; PostgreSQL's retry_for_s and timeouts).
    time_limited = False

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, BotReply)
        state = turn.session.state
        # The turn's index comes with the reply: by now the dialogue may be on a later turn.
        index = event.turn_index if event.turn_index is not None else state.turn_count
        timings = dict(turn.timings_ms)
        turn.trace["timings_ms"] = timings
        turn.trace["turn"] = index
        status = "handed_off" if state.handed_off else "active"
        # The whole record is stored with the turn; the stage's inputs are the reply's fields.
        stored = StoredTurn(turn.session.id, index, turn.turn_id, turn.user_text, event.text,
                            event.language, event.intent, event.path, turn.trace)
        started = time.perf_counter()
        await self.storage.save_turn(stored, state, status)
        # The commit's own time can only be known after it: the client's copy of the trace has
        # it, the stored copy (written by that commit) does not.
        sent = {**turn.trace, "timings_ms": {**timings, "storage": round((time.perf_counter() - started) * 1000, 3)}}
        yield BotMessage(session_id=event.session_id, turn_id=event.turn_id, text=event.text,
                         language=event.language, trace=sent, handoff=event.handoff,
                         handoff_reason=event.handoff_reason, generated_rejected=event.generated_rejected,
                         intent=event.intent)
