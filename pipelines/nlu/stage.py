"""Pipeline stage: intent ranking and entity extraction for each user message."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voicebot.core.events import Event, LanguageIdentified, Understanding
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.dialogue.engine import DialogueEngine


class NluStage(Stage):
    name = "nlu"
    consumes = (LanguageIdentified,)

    def __init__(self, engine: DialogueEngine) -> None:
        self.engine = engine

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, LanguageIdentified)
        understood = await self.engine.understand_async(event.text, event.language)
        yield Understanding(
            session_id=event.session_id, turn_id=event.turn_id, text=event.text, language=event.language,
            intent=understood.intent, confidence=understood.confidence, ranking=understood.ranking,
            entities=tuple(understood.entities), out_of_scope=understood.out_of_scope,
            switched=event.switched, language_reason=event.reason, language_scores=event.scores,
        )
