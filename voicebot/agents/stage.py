"""Pipeline stage: where a hand-off goes (the console queue, a transfer, a call-back) and what the
customer is told, decided before the hand-off message is generated, said and stored."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from voicebot.core.events import BotReply, Event
from voicebot.core.pipeline import Stage, TurnContext

if TYPE_CHECKING:
    from voicebot.agents.desk import AgentDesk


class HandoffStage(Stage):
    name = "handoff"
    consumes = (BotReply,)

    def __init__(self, desk: AgentDesk) -> None:
        self.desk = desk

    async def process(self, event: Event, turn: TurnContext) -> AsyncIterator[Event]:
        assert isinstance(event, BotReply)
        if not event.handoff:
            yield event
            return
        route = await self.desk.route(turn.session, event.handoff_reason)
        turn.trace["handoff"] = route.to_trace(len(self.desk.online(turn.session.tenant)))
        if route.text is None:
            yield event
            return
        # A truthful message replaces the promise of a reply; no generator rephrases it.
        turn.record("response", key=f"handoff_{route.unavailable or route.mode}", language=route.language)
        if turn.session.state.history and turn.session.state.history[-1].user == turn.user_text:
            turn.session.state.history[-1].bot = route.text
        yield dataclasses.replace(event, text=route.text, language=route.language or event.language, prompt_fields=None)
