"""A reply's first words synthesised while the caller's pause is still being timed.

A pause's speculative transcript is usually ready 100-200 ms before a statement's end-of-turn
silence has passed, and until then the machine waits idle. In that time the dialogue can decide
the reply on a copy of the conversation's state and the synthesiser can speak its first clause,
so when the turn ends its first audio is ready (LiveKit Agents calls this preemptive generation).

Nothing a preview does is kept but that audio, and the audio is used only when the real turn's
first clause is the very same text in the same language: a preview that guessed wrong costs CPU,
never a wrong word. A preview stops before any action (``without_actions``): a lookup or a
cancellation runs once, in the real turn, when the caller has finished asking for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from voicebot.core.runtime import SessionHandle
from voicebot.core.sentences import first_clause_split, reply_sentences
from voicebot.core.session import DialogueState
from voicebot.dialogue.actions import PreviewStopped, without_actions
from voicebot.dialogue.engine import LanguageDecision

log = logging.getLogger(__name__)

Clause = tuple[str, str]  # text, language


async def first_clause_of_reply(handle: SessionHandle, text: str, language: str) -> Clause | None:
    """The first clause the bot would speak if the caller's turn were ``text``, decided on a copy
    of the state; None when it cannot be known before the turn: an action decides it, a generator
    phrases it, or a person answers the conversation."""
    runtime = handle.runtime
    if runtime.agents.takes_messages(handle.id):
        return None
    engine = handle.engine
    state = handle.session.state
    copy = DialogueState.from_dict(state.to_dict())
    try:
        with without_actions():
            message = await engine.understand_async(text, language)
            decision, _ = await engine.respond(copy, message, LanguageDecision(language, language != state.language, "preview", {}), handle.id)
    except PreviewStopped:
        return None
    generation = runtime.settings.generation
    if decision.handoff or (generation.backend != "none" and decision.path in generation.paths):
        return None  # the hand-off stage or the generator writes what is said
    sentence, sentence_language = reply_sentences(decision.text, decision.language, decision.notice, decision.notice_language)[0]
    return first_clause_split(sentence)[0], sentence_language


class ReplyPreview:
    """One pause's preview: its clause once decided, then that clause's audio."""

    def __init__(self, clause: Coroutine[Any, Any, Clause | None],
                 synthesize: Callable[[str, str], Awaitable[list[np.ndarray]]]) -> None:
        self.decided: asyncio.Future[Clause | None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run(clause, synthesize))

    async def _run(self, clause: Coroutine[Any, Any, Clause | None],
                   synthesize: Callable[[str, str], Awaitable[list[np.ndarray]]]) -> list[np.ndarray] | None:
        try:
            decided = await clause
        except asyncio.CancelledError:
            self._decide(None)
            raise
        except Exception as exc:  # noqa: BLE001 - a failed preview only means the turn synthesises as usual
            log.warning("reply preview failed: %s: %s", type(exc).__name__, exc)
            decided = None
        self._decide(decided)
        if decided is None:
            return None
        try:
            return await synthesize(*decided)
        except Exception as exc:  # noqa: BLE001 - the turn synthesises it again
            log.warning("reply preview's speech failed: %s: %s", type(exc).__name__, exc)
            return None

    async def audio_for(self, text: str, language: str) -> list[np.ndarray] | None:
        """The preview's audio if it is of this very clause (waiting for it to finish), else None
        and the preview is dropped."""
        if await asyncio.shield(self.decided) != (text, language):
            self.cancel()
            return None
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled():  # dropped meanwhile (the call closes): not this caller's cancellation
                return None
            raise

    def _decide(self, clause: Clause | None) -> None:
        if not self.decided.done():
            self.decided.set_result(clause)

    def cancel(self) -> None:
        self._task.cancel()
        self._decide(None)
