"""Put real values back where a model wrote placeholders.

When the generator may not see personal data (``privacy.generator_sees_raw = false``) its prompt
says ``<EMAIL>`` instead of the address, and a good answer copies the placeholder ("I've sent a
link to <EMAIL>"). The customer must read their real address, so the placeholders of the output
are replaced by the values they stood for in the prompt: the n-th ``<EMAIL>`` by the n-th distinct
e-mail of the prompt (the last one when the model repeats it more often).

The answer is streamed, and a placeholder can arrive split over pieces (``<EM`` + ``AIL>``):
``PlaceholderStream`` holds back a piece's tail that may still become one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from voicebot.privacy.redaction import Finding

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
_OPEN_TAIL = re.compile(r"<[A-Z0-9_]{0,40}$")


def values_by_placeholder(findings: Iterable[Finding]) -> dict[str, list[str]]:
    """Each placeholder's distinct values, in the order they were found."""
    values: dict[str, list[str]] = {}
    for finding in findings:
        known = values.setdefault(finding.placeholder, [])
        if finding.value not in known:
            known.append(finding.value)
    return values


class PlaceholderStream:
    def __init__(self, values: dict[str, list[str]]) -> None:
        self.values = values
        self._used: dict[str, int] = {}
        self._held = ""

    def restore(self, text: str) -> str:
        """``text`` with its placeholders replaced (continuing the counts of earlier pieces)."""
        return PLACEHOLDER.sub(self._value, text)

    def feed(self, piece: str) -> str:
        """What can be shown of the stream so far; a possible placeholder's start is held back."""
        text = self._held + piece
        tail = _OPEN_TAIL.search(text)
        self._held = tail.group(0) if tail else ""
        return self.restore(text[:tail.start()] if tail else text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self.restore(held)

    def unknown(self, text: str) -> list[str]:
        """Placeholders in ``text`` that stood for nothing in the prompt (the model made them up)."""
        return sorted({m.group(0) for m in PLACEHOLDER.finditer(text) if m.group(0) not in self.values})

    def _value(self, match: re.Match[str]) -> str:
        values = self.values.get(match.group(0))
        if not values:
            return match.group(0)
        index = self._used.get(match.group(0), 0)
        self._used[match.group(0)] = index + 1
        return values[min(index, len(values) - 1)]


def restore_placeholders(text: str, values: dict[str, list[str]]) -> str:
    return PlaceholderStream(values).restore(text)
