"""What the sentence encoder adds to the dialogue beyond intents: enum values said in a language
the domain lists no synonyms for ("dati mobili" -> mobile, "домашний интернет" -> wifi).

Only for the slot the bot has just asked for, on the message or a run of up to three of its words,
and only on a clear match (measured on the demo's
synonyms with USE multilingual v3: right matches score 0.8-0.98 against 0.3-0.45 for the other
value; a bare "sì" scored 0.65 against "mobile data", so it must not count). The typed extractors
and the listed synonyms always go first: this fills only what they left empty.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from voicebot.core.entities import Entity
from voicebot.dialogue.domain import DomainSpec

Embed = Callable[[Sequence[str]], np.ndarray]
AsyncEmbed = Callable[[str], Awaitable[np.ndarray]]

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*", re.UNICODE)
MIN_SIMILARITY = 0.75
MIN_MARGIN = 0.15


class EnumMatcher:
    """Cosine of a message to every synonym (all languages) of each value of each enum slot."""

    def __init__(self, spec: DomainSpec, embed: Embed) -> None:
        self._values: dict[str, list[tuple[str, np.ndarray]]] = {}
        for name, slot in spec.slots.items():
            if slot.type != "enum":
                continue
            for value, per_language in slot.values.items():
                synonyms = sorted({value, *(s for words in per_language.values() for s in words)})
                self._values.setdefault(name, []).append((value, embed(synonyms)))

    def slots(self) -> set[str]:
        return set(self._values)

    @staticmethod
    def windows(text: str, longest: int = 3) -> list[tuple[str, int, int]]:
        """The message and its runs of up to ``longest`` words, with their spans: in a sentence
        ("uso i dati mobili del telefono") the value's own words score higher (0.80) than the
        whole sentence (0.68). Text without spaces (Japanese, Chinese) is taken whole."""
        words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
        found = {(text.strip(), 0, len(text))}
        for size in range(1, min(longest, len(words)) + 1):
            for i in range(len(words) - size + 1):
                start, end = words[i][1], words[i + size - 1][2]
                found.add((text[start:end], start, end))
        return sorted(item for item in found if item[0])

    def match(self, slot: str, windows: Sequence[tuple[str, int, int]], vectors: np.ndarray) -> Entity | None:
        """The slot's value a window of the message clearly names (best similarity over all
        windows, clear of the other values by MIN_MARGIN in that window)."""
        best: tuple[float, str, int] | None = None
        for row, vector in enumerate(vectors):
            scored = sorted(((float((synonyms @ vector).max()), value) for value, synonyms in self._values.get(slot, [])), reverse=True)
            if not scored or scored[0][0] < MIN_SIMILARITY or (len(scored) > 1 and scored[0][0] - scored[1][0] < MIN_MARGIN):
                continue
            if best is None or scored[0][0] > best[0]:
                best = (scored[0][0], scored[0][1], row)
        if best is None:
            return None
        similarity, value, row = best
        text, start, end = windows[row]
        return Entity(slot, "enum", value, text, start, end, round(min(similarity, 0.85), 4))
