"""Policy: what the bot says next, given the updated belief state.

Asks for missing slots in the user's language, confirms when the flow says so, calls the action
when the form is complete, answers knowledge questions from the best article, clarifies when two
intents are too close, and hands off to a human after repeated failure, on request, or when the
customer is clearly upset. Every decision records its path and reason for the trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from voicebot.core.session import DialogueState
from voicebot.dialogue.actions import ActionError, ActionRunner
from voicebot.dialogue.domain import Domain
from voicebot.dialogue.identification import GateResult, IdentificationGate
from voicebot.dialogue.knowledge import KnowledgeBase
from voicebot.dialogue.locales import Locales
from voicebot.dialogue.responses import ResponseTemplates
from voicebot.dialogue.tracker import TrackerUpdate, Understood

if TYPE_CHECKING:
    from voicebot.dialogue.grounding import PromptFields

log = logging.getLogger(__name__)


# Replies that end by offering a human ("Would you like me to connect you to an agent?"): a plain
# "yes" to them hands off.
OFFERS_HANDOFF = frozenset({"error_internal", "kb_not_found"})

# Why a conversation was handed to a person: a closed set, so metrics, the agents' queue and a
# helpdesk webhook can count and sort by it (the free-text ``reason`` says the details).
HandoffReason = Literal["asked", "accepted_offer", "sentiment", "repeated_failure", "identification_failed"]


@dataclass
class Decision:
    text: str
    language: str
    path: str  # template | action | knowledge | clarify | fallback | handoff | error | identify
    key: str
    reason: str
    handoff: bool = False
    handoff_reason: HandoffReason | None = None
    knowledge: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    facts: dict[str, str] | None = None  # values the answer states; a generator must keep them
    identification: dict[str, Any] | None = None  # what the identification gate decided this turn
    prompt_fields: PromptFields | None = None  # set by the engine: what a generator may phrase the answer from
    # A framework notice at the head of ``text`` in another language than the answer (the
    # engine's answer_languages notice): a voice says it in its own language.
    notice: str | None = None
    notice_language: str | None = None


class Policy:
    def __init__(self, domain: Domain, locales: Locales, kb: KnowledgeBase, actions: ActionRunner, clarify_margin: float,
                 embed_query: Callable[[str], Awaitable[np.ndarray]] | None = None) -> None:
        self.domain = domain
        self.spec = domain.spec
        self.locales = locales
        self.kb = kb
        self.actions = actions
        self.templates = ResponseTemplates(domain, locales)
        self.clarify_margin = clarify_margin
        self.gate = IdentificationGate(self.spec, actions)
        self.embed_query = embed_query  # the sentence encoder, batched across sessions (semantic KB ranking)

    # -- helpers -----------------------------------------------------------------------------
    def _say(self, key: str, state: DialogueState, path: str, reason: str, values: dict[str, Any] | None = None, **extra: Any) -> Decision:
        merged = {name: slot.value for name, slot in state.slots.items()}
        merged.update(values or {})
        rendered = self.templates.render(key, state.language, merged, variant=state.turn_count)
        if rendered is None:
            return self._system("error_internal", state, "error", f"no response {key!r} in any language")
        text, language, used = rendered
        facts = {name: value for name, value in used.items() if name not in ("body", "title")}
        return Decision(text, language, path, key, reason, facts=facts, **extra)

    def _system(self, key: str, state: DialogueState, path: str, reason: str, handoff_reason: HandoffReason | None = None,
                **values: Any) -> Decision:
        text, language = self.locales.message(key, state.language, **values)
        state.handoff_offered = key in OFFERS_HANDOFF
        return Decision(text, language, path, key, reason, handoff=path == "handoff", handoff_reason=handoff_reason)

    def _missing_slot(self, flow: str, state: DialogueState) -> str | None:
        return next((slot for slot in self.spec.flows[flow].required if slot not in state.slots), None)

    # -- the decision --------------------------------------------------------------------------
    async def decide(self, state: DialogueState, message: Understood, update: TrackerUpdate, session_id: str) -> Decision:
        handoff_rules = self.spec.handoff
        offered, state.handoff_offered = state.handoff_offered, False  # an offer is answered by the very next message
        if update.kind == "handoff":
            state.handed_off = True
            return self._system("handoff", state, "handoff", "the customer asked for a human", "asked")
        if offered and message.intent == "affirm" and not message.out_of_scope:
            state.handed_off = True
            state.awaiting_confirmation = None  # the "yes" answered the offer, not an older question
            return self._system("handoff", state, "handoff", "the customer accepted the offer of a human", "accepted_offer")
        if state.sentiment_trend <= handoff_rules.negative_sentiment:
            state.handed_off = True
            return self._system("handoff", state, "handoff", f"sentiment trend {state.sentiment_trend} is below {handoff_rules.negative_sentiment}",
                                "sentiment")

        if state.awaiting_confirmation:
            decision = await self._confirmation(state, update, session_id)
            if decision is not None:
                state.failed_turns = 0
                return decision

        if update.kind == "out_of_scope" or (update.kind == "answer" and not update.answered_question and not update.confirmation):
            return self._not_understood(state, message, "out of scope" if update.kind == "out_of_scope" else f"{message.intent!r} answers no open question")

        clarify = self._clarification(state, message, update)
        if clarify is not None:
            return clarify

        state.failed_turns = 0
        intent_spec = self.spec.intents.get(message.intent)
        if update.kind == "smalltalk":
            return self._say(message.intent, state, "template", f"smalltalk intent {message.intent}")
        if update.kind == "knowledge":
            return await self._knowledge(state, message)
        previous = self.spec.intents.get(state.active_intent or "")
        if update.kind == "correction" and previous is not None and previous.flow:
            # A corrected value after a finished flow: run that flow again with the new value.
            state.active_flow = previous.flow
        if state.active_flow is None and intent_spec and intent_spec.kind == "flow":
            state.active_flow, state.active_intent = intent_spec.flow, message.intent
        if state.active_flow:
            return await self._advance_flow(state, session_id)
        return self._not_understood(state, message, "nothing to do with this message")

    def _not_understood(self, state: DialogueState, message: Understood, reason: str) -> Decision:
        state.failed_turns += 1
        if state.failed_turns >= self.spec.handoff.max_failed_turns:
            state.handed_off = True
            state.failed_turns = 0
            return self._system("handoff", state, "handoff", f"{self.spec.handoff.max_failed_turns} turns in a row not understood ({reason})",
                                "repeated_failure")
        if state.requested_slot:
            return self._say(f"ask_{state.requested_slot}", state, "template", f"not understood ({reason}); asking again for {state.requested_slot}")
        if state.identifying:
            return self._identify_reply("identify_ask", state, state.identifying, GateResult("ask", f"not understood ({reason}); asking again"))
        return self._system("fallback", state, "fallback", reason)

    def _clarification(self, state: DialogueState, message: Understood, update: TrackerUpdate) -> Decision | None:
        if update.answered_question or update.confirmation or len(message.ranking) < 2:
            return None
        (first, p1), (second, p2) = message.ranking[0], message.ranking[1]
        kinds = {self.spec.intents[i].kind for i in (first, second) if i in self.spec.intents}
        if p1 >= 0.6 or p1 - p2 >= self.clarify_margin or not kinds <= {"flow", "knowledge", "handoff"}:
            return None
        options = {
            "option_a": self.locales.intent_name(first, state.language),
            "option_b": self.locales.intent_name(second, state.language),
        }
        return self._system("clarify", state, "clarify", f"{first} {p1:.2f} and {second} {p2:.2f} are too close", **options)

    async def _knowledge(self, state: DialogueState, message: Understood) -> Decision:
        chain = self.locales.chain(state.language)
        vector = await self.embed_query(message.text) if self.embed_query is not None and self.kb.semantic else None
        article, hits, ranked_in = self.kb.answer(message.text, chain, query_vector=vector)
        ranking = [{"id": h.article.id, "title": h.article.title, "score": h.score, "lexical": h.lexical, "semantic": h.semantic, "phonetic": h.phonetic,
                    "language": h.article.language} for h in hits]
        if article is None:
            return self._system("kb_not_found", state, "knowledge", "no article scored above the threshold")
        values = {"title": article.title, "body": article.body, "article_id": article.id}
        decision = self._say("kb_answer", state, "knowledge", f"best article {article.id} (ranked in {ranked_in})", values)
        decision.knowledge = {"used": article.id, "shown_in": article.language, "ranked_in": ranked_in, "ranking": ranking}
        return decision

    async def _confirmation(self, state: DialogueState, update: TrackerUpdate, session_id: str) -> Decision | None:
        flow = state.awaiting_confirmation
        assert flow is not None
        if update.confirmation == "confirmed":
            state.awaiting_confirmation = None
            if not self.gate.is_open(state, flow):  # never act for a subject the session has not proved it owns
                return await self._advance_flow(state, session_id)
            return await self._run_action(state, flow, session_id)
        if update.confirmation == "declined":
            state.awaiting_confirmation = None
            state.active_flow = None
            return self._say(f"{flow}_declined", state, "template", "the customer declined the confirmation")
        if update.confirmation == "changed":
            state.awaiting_confirmation = None
            return await self._advance_flow(state, session_id)
        # Neither yes nor no (and no other topic): ask again, with fresh values.
        state.awaiting_confirmation = None
        return await self._advance_flow(state, session_id)

    async def _advance_flow(self, state: DialogueState, session_id: str) -> Decision:
        flow_name = state.active_flow
        assert flow_name is not None
        flow = self.spec.flows[flow_name]
        missing = self._missing_slot(flow_name, state)
        if missing:
            state.requested_slot = missing
            return self._say(f"ask_{missing}", state, "template", f"flow {flow_name} needs {missing}")
        # Before anything that reads the customer's data, the preview included.
        try:
            gate = await self.gate.check(state, flow_name, session_id)
        except ActionError as exc:
            return self._action_failed(state, flow.identify.check if flow.identify else flow_name, exc)
        if gate.status != "open":
            return self._identified_not(state, flow_name, gate)
        identification = gate.to_trace(flow_name) if flow.identify else None
        if flow.confirm:
            preview = await self._preview(state, flow_name, session_id)
            if isinstance(preview, Decision):
                preview.identification = identification
                return preview
            state.awaiting_confirmation = flow_name
            decision = self._say(f"confirm_{flow_name}", state, "template", f"flow {flow_name} asks before acting", preview)
        else:
            decision = await self._run_action(state, flow_name, session_id)
        decision.identification = identification
        return decision

    def _identified_not(self, state: DialogueState, flow_name: str, gate: GateResult) -> Decision:
        """Ask for a contact, refuse, or hand off; none of these replies says anything about the order."""
        if gate.status == "locked":
            state.handed_off = True
            return self._identify_reply("identify_failed", state, flow_name, gate, path="handoff", handoff=True)
        return self._identify_reply("identify_ask" if gate.status == "ask" else "identify_refused", state, flow_name, gate)

    def _identify_reply(self, key: str, state: DialogueState, flow_name: str, gate: GateResult, path: str = "identify",
                        handoff: bool = False) -> Decision:
        # Path "identify" is not a generator path: these replies are said as written, so a model
        # can never add anything to them.
        specific = f"{key}_{flow_name}"
        chosen = specific if self.templates.has(specific, state.language) else key
        decision = self._say(chosen, state, path, gate.reason, handoff=handoff,
                             handoff_reason="identification_failed" if handoff else None)
        decision.identification = gate.to_trace(flow_name)
        return decision

    async def _preview(self, state: DialogueState, flow_name: str, session_id: str) -> dict[str, Any] | Decision:
        """Values for the confirmation question, read by the flow's preview action if it has one.

        A preview outcome other than ``found``/``ok`` (an unknown order) is answered with its own
        template and the flow asks again for its first slot instead of confirming nonsense.
        """
        flow = self.spec.flows[flow_name]
        lookup = flow.preview
        if lookup is None:
            return {}
        try:
            result = await self.actions.run(lookup, self._slot_values(state), state.language, session_id)
        except ActionError as exc:
            return self._action_failed(state, lookup, exc)
        if result["outcome"] not in ("found", "ok"):
            first = flow.required[0] if flow.required else None
            if first:
                state.requested_slot = first
                state.slots.pop(first, None)
            return self._say(f"{lookup}_{result['outcome']}", state, "action", f"{lookup} before confirming: {result['outcome']}", result,
                             action={"name": lookup, "outcome": result["outcome"]})
        return result

    @staticmethod
    def _slot_values(state: DialogueState) -> dict[str, str]:
        return {name: slot.value for name, slot in state.slots.items()}

    async def _run_action(self, state: DialogueState, flow_name: str, session_id: str) -> Decision:
        action = self.spec.flows[flow_name].action
        state.active_flow = None
        state.requested_slot = None
        if action is None:
            return self._say(f"{flow_name}_done", state, "template", f"flow {flow_name} complete")
        started = time.perf_counter()
        try:
            result = await self.actions.run(action, self._slot_values(state), state.language, session_id)
        except ActionError as exc:
            return self._action_failed(state, action, exc)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        key = f"{action}_{result['outcome']}"
        if not self.templates.has(key, state.language):
            key = f"{action}_result"
        return self._say(key, state, "action", f"flow {flow_name} complete; {action} -> {result['outcome']}", result,
                         action={"name": action, "outcome": result["outcome"], "duration_ms": elapsed})

    def _action_failed(self, state: DialogueState, action: str, exc: ActionError) -> Decision:
        log.warning("action %s failed: %s", action, exc)
        decision = self._system("error_internal", state, "error", str(exc))
        decision.action = {"name": action, "error": str(exc)}
        return decision
