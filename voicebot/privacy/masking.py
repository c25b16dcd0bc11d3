"""Redact a whole turn at once: its transcript and every string inside its trace.

A trace repeats what the customer said in many places (the entities, the slots, the generator's
prompt fields, the history); one e-mail missed in one corner is a leak. All strings of a turn are
redacted together (``redact_many``), so a value found in one place is masked everywhere, even where
it stands alone (a slot value holding just the number) and its context would not give it away.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from voicebot.core import jsontext
from voicebot.privacy.redaction import redact_many

# Every built-in kind holds an '@' (e-mail) or at least 8 digits (phone, card, IBAN): other strings
# are skipped unscanned (most of a trace: intent names, paths, order ids, scores), unless the
# integrator has patterns of their own. A value found elsewhere passes the same test.
_MAYBE_PII = re.compile(r"@|\d(?:\D*\d){7}")


def redact_turn(texts: Sequence[str], tree: Any, patterns: Mapping[str, re.Pattern[str]]
                ) -> tuple[list[str], Any, Counter[str]]:
    """``texts`` and a copy of ``tree`` (a JSON-like trace) with personal data replaced by
    placeholders, and how many distinct values of each kind were masked. The copy is what
    ``json.dumps(default=str)`` would write, so objects JSON cannot hold are redacted as text."""
    plain = jsontext.copy_json(tree, default=str)  # a deep copy, in C
    slots: list[tuple[Any, Any]] = []  # (container, key) of each string worth scanning
    _strings(plain, slots, bool(patterns))
    candidates = [*texts, *(container[key] for container, key in slots)]
    unique = list(dict.fromkeys(text for text in candidates if patterns or _MAYBE_PII.search(text)))
    kinds: Counter[str] = Counter()
    if not unique:
        return list(texts), plain, kinds
    masked, findings = redact_many(unique, patterns)
    replaced = dict(zip(unique, masked, strict=True))
    for container, key in slots:
        container[key] = replaced.get(container[key], container[key])
    kinds.update(kind for kind, _ in {(f.kind, f.value) for found in findings for f in found})
    return [replaced.get(text, text) for text in texts], plain, kinds


def _strings(node: Any, slots: list[tuple[Any, Any]], every: bool) -> None:
    """Where the strings of a JSON value are (only those that may hold PII, unless ``every``)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, str):
            if every or _MAYBE_PII.search(value):
                slots.append((node, key))
        elif isinstance(value, dict | list):
            _strings(value, slots, every)
