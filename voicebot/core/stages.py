"""Core stage of the text path: a template reply streamed sentence by sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voicebot.core.events import BotReply, BotTextChunk, Event
from voicebot.core.pipeline import Stage, TurnContext
from voicebot.core.sentences import reply_sentences


class ResponseStreamStage(Stage):
    """Streams a template reply sentence by sentence (a generated one was streamed token by token)."""

    name = "response"
    consumes = (BotReply,)

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, BotReply)
        if event.streamed:
            yield event
            return
        sentences = reply_sentences(event.text, event.language, event.notice, event.notice_language)
        for index, (sentence, language) in enumerate(sentences):
            yield BotTextChunk(session_id=event.session_id, turn_id=event.turn_id, text=sentence, index=index, sentence=True,
                               language=language)
        yield event
