"""Pipeline stage: the dialogue's decision for each understood message (state tracking, policy)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voicebot.core.entities import Entity
from voicebot.core.events import BotReply, Event, Understanding
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.dialogue.engine import DialogueEngine, LanguageDecision
from voicebot.dialogue.slot_proposals import parse_proposals, tracking_prompt
from voicebot.dialogue.tracker import Understood
from voicebot.pipelines.generation.base import GenerationError


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
                       language=decision.language, path=decision.path, handoff=decision.handoff, handoff_reason=decision.handoff_reason,
                       intent=message.intent, turn_index=state.turn_count, prompt_fields=decision.prompt_fields,
                       notice=decision.notice, notice_language=decision.notice_language)
