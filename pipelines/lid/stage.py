"""Pipeline stage: decide the language of each user message."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voicebot.core.events import Event, LanguageIdentified, UserText
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.dialogue.engine import DialogueEngine


class TextLanguageStage(Stage):
    name = "language"
    consumes = (UserText,)

    def __init__(self, engine: DialogueEngine) -> None:
        self.engine = engine

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, UserText)
        if event.language:  # a call's spoken-language ID already decided, from audio and text
            switched = event.language != turn.session.state.language
            measured = event.language_trace or {}
            turn.trace["language"] = {"chosen": event.language, "switched": switched, **measured}
            scores = {key: value for key, value in measured.items() if key not in ("chosen", "switched", "reason")}
            yield LanguageIdentified(session_id=event.session_id, turn_id=event.turn_id, text=event.text, language=event.language,
                                     scores=scores, switched=switched, reason=str(measured.get("reason", "")))
            return
        decision = await self.engine.identify_language_async(event.text, turn.session.state)
        turn.trace["language"] = decision.to_trace()
        yield LanguageIdentified(
            session_id=event.session_id, turn_id=event.turn_id, text=event.text,
            language=decision.language, scores=decision.scores, switched=decision.switched, reason=decision.reason,
        )
