"""Dialogue-state tracking: fold one understood message into the session's belief state.

Handles slot filling (with the source text and turn of every value), answers to the question the
bot asked, corrections ("no, it's 54321"), topic switches with slot carry-over, confirmations,
the sentiment trend and the count of failed turns. Returns what changed, for the trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicebot.core.session import DialogueState, SlotValue
from voicebot.dialogue.domain import DomainSpec
from voicebot.pipelines.nlu.entities import Entity

# Intents strong enough to change the topic even while the bot waits for an answer.
SWITCH_CONFIDENCE = 0.55
TOPIC_KINDS = {"flow", "knowledge", "handoff"}


@dataclass
class Understood:
    """The NLU view of one message, as the tracker needs it."""

    text: str
    intent: str
    confidence: float
    ranking: list[tuple[str, float]]
    entities: list[Entity]
    out_of_scope: bool


@dataclass
class TrackerUpdate:
    kind: str
    filled: list[str] = field(default_factory=list)
    corrected: list[dict[str, str]] = field(default_factory=list)
    answered_question: str | None = None
    topic_switch: dict[str, str | None] | None = None
    confirmation: str | None = None  # "confirmed" | "declined" | "changed"
    inferred_flow: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if value not in (None, [], {})}


def _flow_for_slot(spec: DomainSpec, slot: str) -> str | None:
    for name, flow in spec.flows.items():
        if flow.required and flow.required[0] == slot:
            return name
    return None


def _intent_for_flow(spec: DomainSpec, flow: str) -> str | None:
    return next((name for name, intent in spec.intents.items() if intent.flow == flow), None)


def _asked_slots(state: DialogueState, spec: DomainSpec) -> set[str]:
    """Slots that answer the bot's open question: the requested slot, or while the bot waits for
    identification any contact it accepts (email *or* phone) and the flow's own slots (a
    corrected order id)."""
    asked = {state.requested_slot} if state.requested_slot else set()
    flow = spec.flows.get(state.identifying or "")
    if flow is not None and flow.identify is not None:
        asked |= set(flow.identify.any_of) | set(flow.required)
    return asked


def update_state(state: DialogueState, message: Understood, spec: DomainSpec, sentiment: float) -> TrackerUpdate:
    state.turn_count += 1
    state.sentiment_trend = round(0.4 * state.sentiment_trend + 0.6 * sentiment, 3)
    intent_spec = spec.intents.get(message.intent)
    kind = "out_of_scope" if message.out_of_scope or intent_spec is None else intent_spec.kind
    update = TrackerUpdate(kind=kind)
    asked = _asked_slots(state, spec)

    # 1. Slot values in this message; the best entity per slot.
    best: dict[str, Entity] = {}
    for entity in message.entities:
        if entity.slot in spec.slots and (entity.slot not in best or entity.confidence > best[entity.slot].confidence):
            best[entity.slot] = entity
    for slot, entity in best.items():
        existing = state.slots.get(slot)
        if existing and existing.value != entity.value:
            update.corrected.append({"slot": slot, "from": existing.value, "to": entity.value})
        elif not existing:
            update.filled.append(slot)
        state.slots[slot] = SlotValue(entity.value, entity.confidence, state.turn_count, entity.text)
        if slot in asked:
            update.answered_question = slot

    # 2. A pending confirmation takes the answer first.
    if state.awaiting_confirmation:
        pending = state.awaiting_confirmation
        if update.corrected:
            update.confirmation = "changed"
        elif kind == "answer" and message.intent == "affirm":
            update.confirmation = "confirmed"
        elif kind == "answer" and message.intent == "deny":
            update.confirmation = "declined"
        elif kind in TOPIC_KINDS and message.confidence >= SWITCH_CONFIDENCE and intent_spec and intent_spec.flow != pending:
            state.awaiting_confirmation = None
            _switch(state, message.intent, intent_spec.flow, update)
        return update

    # 3. An answer to the question the bot asked keeps the flow, whatever the classifier guessed,
    #    unless the message clearly starts another topic.
    if update.answered_question:
        target_flow = intent_spec.flow if intent_spec else None
        if kind in TOPIC_KINDS and target_flow != state.active_flow and message.confidence >= SWITCH_CONFIDENCE:
            _switch(state, message.intent, target_flow, update)
        else:
            update.kind = "answer"
        state.requested_slot = None
        return update

    # 4. A new topic (flow, knowledge question, hand-off); slots carry over.
    if kind in TOPIC_KINDS:
        if state.active_flow is None or message.intent != state.active_intent:
            _switch(state, message.intent, intent_spec.flow if intent_spec else None, update)
        return update

    # 5. A bare value with no open question: infer the flow it starts ("12345" -> order status).
    if kind == "answer" and best and state.active_flow is None:
        for slot in best:
            flow = _flow_for_slot(spec, slot)
            if flow:
                _switch(state, _intent_for_flow(spec, flow), flow, update)
                update.inferred_flow = flow
                update.kind = "flow"
                break
    if kind == "answer" and update.corrected and state.active_flow is None:
        update.kind = "correction"
    return update


def _switch(state: DialogueState, intent: str | None, flow: str | None, update: TrackerUpdate) -> None:
    update.topic_switch = {"from": state.active_intent, "to": intent}
    state.active_intent = intent
    state.active_flow = flow
    state.requested_slot = None
    state.awaiting_confirmation = None
    state.identifying = None

