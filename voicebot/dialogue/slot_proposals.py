"""Seq2seq state tracking (optional): the generator proposes "slot=value" pairs for a message.

Proposals only fill slots the rules and NLU found nothing for, and each value must pass the slot's
own type check (an order id must match its pattern, an enum value must be one of its values), so a
model can add recall but never inject a malformed value. Their source is marked in the trace.
A value for a slot that proves identity (a flow's `identify.any_of`) must appear in the message
itself: a model that learned a customer's email must never be able to "remember" it for someone.
"""

from __future__ import annotations

import re

from voicebot.dialogue.domain import DomainSpec
from voicebot.pipelines.nlu.entities import Entity, EntityExtractor

PROPOSAL_CONFIDENCE = 0.5
_PAIR = re.compile(r"([a-z_]+)\s*=\s*([^;|\n]+)")


def tracking_prompt(text: str, spec: DomainSpec, requested_slot: str | None) -> str:
    return f"track slots: {', '.join(spec.slots)} | requested: {requested_slot or 'none'} | user: {text}"


def parse_proposals(generated: str, text: str, spec: DomainSpec, extractor: EntityExtractor, language: str,
                    found: list[Entity]) -> list[Entity]:
    """Valid proposals for slots that ``found`` (the rule-based entities) does not cover."""
    covered = {entity.slot for entity in found}
    identifying = {slot for flow in spec.flows.values() if flow.identify for slot in flow.identify.any_of}
    accepted: list[Entity] = []
    for slot, raw in _PAIR.findall(generated.lower()):
        value = raw.strip()
        if slot not in spec.slots or slot in covered or not value:
            continue
        checked = [e for e in extractor.extract(value, language) if e.slot == slot and e.value == value.lower()]
        if spec.slots[slot].type == "enum":
            checked = [e for e in extractor.extract(value, language) if e.slot == slot]
        if not checked:
            continue
        start = text.lower().find(value)
        if slot in identifying and start < 0:
            continue
        accepted.append(Entity(slot, spec.slots[slot].type, checked[0].value, value, max(start, 0),
                               max(start, 0) + len(value), PROPOSAL_CONFIDENCE))
        covered.add(slot)
    return accepted
