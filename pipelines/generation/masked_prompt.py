"""The generator's prompt with personal data masked (``privacy.generator_sees_raw = false``).

A generator may be a hosted or third-party model, or be fine-tuned later on what it was shown: it
gets ``<EMAIL>``, ``<PHONE>``... instead of the customer's details. The facts an answer is about
(order ids, dates, amounts) are never masked by the redaction rules, so the grounding guard still
checks them. All fields are masked together, so a value gets the same placeholder everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from voicebot.dialogue.grounding import PromptFields
from voicebot.privacy.redaction import Finding, redact_many


def mask_fields(fields: PromptFields, patterns: Mapping[str, re.Pattern[str]]) -> tuple[PromptFields, list[Finding]]:
    """``fields`` with PII replaced by placeholders, and what was replaced."""
    facts = list(fields.facts.items())
    texts = [fields.user, fields.knowledge or "", fields.template, *(str(value) for _, value in facts),
             *(text for pair in fields.history for text in pair)]
    masked, findings = redact_many(texts, patterns)
    user, knowledge, template, *rest = masked
    fact_values, history = rest[:len(facts)], rest[len(facts):]
    masked_fields = PromptFields(
        fields.language, fields.intent, user,
        {key: value for (key, _), value in zip(facts, fact_values, strict=True)},
        knowledge if fields.knowledge is not None else None, template,
        [(history[i], history[i + 1]) for i in range(0, len(history), 2)],
    )
    return masked_fields, [finding for found in findings for finding in found]
