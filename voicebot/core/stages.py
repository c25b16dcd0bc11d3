"""Core stages of the text path: dialogue decision, response streaming, persistence."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from voicebot.dialogue.engine import DialogueEngine, LanguageDecision
from voicebot.dialogue.slot_proposals import parse_proposals, tracking_prompt
from voicebot.dialogue.tracker import Understood
from voicebot.core.events import BotMessage, BotReply, BotTextChunk, Event, Understanding
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.pipelines.generation.seq2seq import GenerationError
from voicebot.pipelines.nlu.entities import Entity
from voicebot.storage.base import Storage, StoredTurn
from voicebot.core.sentences import split_sentences


class DialogueStage(Stage):
    name = "dialogue"
    consumes = (Understanding,)

    def __init__(self, engine: DialogueEngine, generator_source: object | None = None, max_new_tokens: int = 32) -> None:
        self.engine = engine
        # With seq2seq state tracking on, generator_source.generator proposes slot values.
        self.generator_source = generator_source
        self.max_new_tokens = max_new_tokens

    async def _proposals(self, text: str, language: str, found: list[Entity], turn: TurnContext) -> list[Entity]:
        generator = getattr(self.generator_source, "generator", None)
        if generator is None:
            return []
        spec = self.engine.domain.spec
        prompt = tracking_prompt(text, spec, turn.session.state.requested_slot)
        try:
            result = await generator.generate(prompt, self.max_new_tokens)
        except GenerationError as exc:
            turn.trace["slot_proposals"] = {"error": str(exc)}
            return []
        accepted = parse_proposals(result.text, text, spec, self.engine.extractor, language, found)
        turn.trace["slot_proposals"] = {"generated": result.text, "accepted": [e.to_dict() for e in accepted]}
        return accepted

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, Understanding)
        language = LanguageDecision(event.language, event.switched, event.language_reason, dict(event.language_scores))
        entities = list(event.entities)
        entities += await self._proposals(event.text, event.language, entities, turn)
        message = Understood(event.text, event.intent, event.confidence, event.ranking, entities, event.out_of_scope)
        state = turn.session.state
        decision, trace = await self.engine.respond(state, message, language, turn.session.id)
        turn.trace.update(trace)
        yield BotReply(session_id=event.session_id, turn_id=event.turn_id, text=decision.text,
                       language=decision.language, path=decision.path, handoff=decision.handoff,
                       intent=message.intent, turn_index=state.turn_count, prompt_fields=decision.prompt_fields)


class ResponseStreamStage(Stage):
    """Streams a template reply sentence by sentence (a generated one was streamed token by token)."""

    name = "response"
    consumes = (BotReply,)

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, BotReply)
        if event.streamed:
            yield event
            return
        for index, sentence in enumerate(split_sentences(event.text)):
            yield BotTextChunk(session_id=event.session_id, turn_id=event.turn_id, text=sentence, index=index, sentence=True,
                               language=event.language)
        yield event


class PersistStage(Stage):
    """Commits the turn and the state after it; only then is the final message released."""

    name = "storage"
    consumes = (BotReply,)
    # A commit runs in the storage thread and cannot be taken back by cancelling the call: cut
    # short, the turn could be stored while the customer is told it was not. SQLite's busy
    # timeout bounds it instead.
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
                         language=event.language, trace=sent, handoff=event.handoff, generated_rejected=event.generated_rejected)
