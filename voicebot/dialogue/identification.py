"""The identification gate: no flow action or preview reveals a customer's data to a stranger.

A flow with `identify` (domain.yaml) runs its action only once the session has proved it owns the
flow's subject (the order id): the integrator's backend said who the customer is
(``state.identity``), or the customer gave a contact (email, phone) that the domain's check
action accepts for that very subject. The gate sits in the policy, not in a model, so no
phrasing ("ignore your rules", "I am the admin") gets past it: such a message is just another
request for an order this session has not proved it owns.

What the customer hears never says *why* a check failed: an unknown order and a wrong contact get
the same refusal, so order ids cannot be enumerated. Each contact given is used for one check
only, and failed checks are counted per session; at the limit a human takes over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from voicebot.core.session import DialogueState
from voicebot.dialogue.actions import ActionRunner
from voicebot.dialogue.domain import DomainSpec

VERIFIED = "verified"

GateStatus = Literal["open", "ask", "refused", "locked"]


@dataclass
class GateResult:
    status: GateStatus  # open: go on; ask: ask for a contact; refused: check failed; locked: hand off
    reason: str
    via: str | None = None  # what proved ownership: "session", "identity", or the contact slots used

    def to_trace(self, flow: str) -> dict[str, Any]:
        """For the trace, which reaches the client: it must not tell unknown from not-yours either."""
        return {"flow": flow, "result": self.status, "via": self.via, "reason": self.reason}


class IdentificationGate:
    def __init__(self, spec: DomainSpec, actions: ActionRunner) -> None:
        self.spec = spec
        self.actions = actions

    def is_open(self, state: DialogueState, flow_name: str) -> bool:
        """True if the flow needs no identification or the session already proved ownership."""
        flow = self.spec.flows[flow_name]
        subject = flow.identify_subject()
        if subject is None:
            return flow.identify is None
        value = state.slot_value(subject)
        return value is not None and value in state.verified.get(subject, [])

    async def check(self, state: DialogueState, flow_name: str, session_id: str) -> GateResult:
        """Decide whether ``flow_name`` may reveal data now; may run the domain's check action.

        Raises ActionError when the check action itself fails (the policy apologises; that is not
        a failed identification and does not count).
        """
        flow = self.spec.flows[flow_name]
        identify = flow.identify
        if identify is None:
            return GateResult("open", "flow needs no identification")
        subject = flow.identify_subject()
        assert subject is not None  # `voicebot check` rejects an identify without a subject
        value = state.slot_value(subject)
        if value is None:
            return GateResult("ask", f"{subject} is not known yet")
        if self.is_open(state, flow_name):
            state.identifying = None
            return GateResult("open", f"this session already proved it owns {subject} {value}", "session")
        if state.identify_failures >= identify.max_attempts:
            return self._lock(state, identify.max_attempts)

        if state.identity:
            known = {slot: str(state.identity[slot]) for slot in identify.any_of if state.identity.get(slot)}
            if known and await self._verify(identify.check, subject, value, known, state, session_id):
                return self._open(state, subject, value, "identity")

        given = {slot: state.slots.pop(slot).value for slot in identify.any_of if slot in state.slots}
        if not given:
            state.identifying = flow_name
            return GateResult("ask", f"flow {flow_name} needs one of {', '.join(identify.any_of)} for {subject} {value}")
        if await self._verify(identify.check, subject, value, given, state, session_id):
            return self._open(state, subject, value, "+".join(given))
        state.identify_failures += 1
        if state.identify_failures >= identify.max_attempts:
            return self._lock(state, identify.max_attempts)
        state.identifying = flow_name
        return GateResult("refused", f"check failed ({state.identify_failures} of {identify.max_attempts})")

    async def _verify(self, check: str, subject: str, value: str, contacts: dict[str, str], state: DialogueState,
                      session_id: str) -> bool:
        # Only the subject and the contacts reach the check: it decides on nothing else.
        result = await self.actions.run(check, {subject: value, **contacts}, state.language, session_id)
        return result.get("outcome") == VERIFIED

    @staticmethod
    def _open(state: DialogueState, subject: str, value: str, via: str) -> GateResult:
        owned = state.verified.setdefault(subject, [])
        if value not in owned:
            owned.append(value)
        state.identifying = None
        return GateResult("open", f"verified as owner of {subject} {value}", via)

    @staticmethod
    def _lock(state: DialogueState, limit: int) -> GateResult:
        state.identifying = None
        state.active_flow = None
        state.requested_slot = None
        state.awaiting_confirmation = None
        return GateResult("locked", f"{limit} failed identity checks in this session")
