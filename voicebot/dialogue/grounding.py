"""Prompts for the generator and the guard that keeps its answers grounded.

The prompt is built from the dialogue state and the grounded template answer's facts; the same
builder turns stored turns into training inputs (`voicebot export-dataset`), so a fine-tuned model
sees exactly the format it will be served. The guard accepts a generated reply only if it is in the
target language and repeats every fact (order ids, dates, amounts, e-mails, step numbers) verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from voicebot.pipelines.lid.text import TextLanguageDetector, letter_count

_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


@dataclass
class PromptFields:
    """Everything the generator may use, and nothing else (stored in the trace for export)."""

    language: str
    intent: str | None
    user: str
    facts: dict[str, str] = field(default_factory=dict)
    knowledge: str | None = None
    template: str = ""
    history: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"language": self.language, "intent": self.intent, "user": self.user, "facts": self.facts,
                "knowledge": self.knowledge, "template": self.template, "history": [list(h) for h in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptFields:
        return cls(data["language"], data.get("intent"), data["user"], dict(data.get("facts", {})), data.get("knowledge"),
                   data.get("template", ""), [tuple(h) for h in data.get("history", [])])  # type: ignore[misc]


def build_prompt(fields: PromptFields) -> str:
    parts = [f"answer in {fields.language}", f"intent: {fields.intent or 'none'}"]
    if fields.facts:
        parts.append("facts: " + "; ".join(f"{key}={value}" for key, value in fields.facts.items()))
    if fields.knowledge:
        parts.append(f"knowledge: {fields.knowledge}")
    for user, bot in fields.history[-2:]:
        parts.append(f"earlier user: {user} | earlier bot: {bot}")
    parts.append(f"reference: {fields.template}")
    parts.append(f"user: {fields.user}")
    return " | ".join(parts)


def required_facts(fields: PromptFields) -> list[str]:
    """What a generated reply must repeat verbatim: the template's fact values and its numbers."""
    values = [str(v) for v in fields.facts.values() if str(v) and str(v) in fields.template]
    # Numbers of the template text (steps, days, prices) not already inside a fact value.
    numbers = [n for n in _NUMBER.findall(fields.template) if not any(n in value for value in values)]
    seen: list[str] = []
    for item in values + numbers:
        if item not in seen:
            seen.append(item)
    return seen


@dataclass
class GuardVerdict:
    passed: bool
    reasons: list[str]
    language: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "detected_language": self.language}


def check_grounding(text: str, fields: PromptFields, detector: TextLanguageDetector) -> GuardVerdict:
    reasons: list[str] = []
    if not text.strip():
        return GuardVerdict(False, ["empty reply"], None)
    missing = [fact for fact in required_facts(fields) if fact not in text]
    if missing:
        reasons.append("missing facts: " + ", ".join(missing))
    scores = detector.scores(text)["combined"]
    detected, probability = detector.best(scores)
    target = fields.language
    if detected != target and (letter_count(text) >= 4 or detector.is_cjk(text) != target.startswith("zh")):
        reasons.append(f"language {detected} ({probability:.2f}) is not {target}")
    return GuardVerdict(not reasons, reasons, detected)
