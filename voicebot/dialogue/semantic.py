"""What the sentence encoder adds to the dialogue beyond intents: enum values said in a language
the domain lists no synonyms for ("dati mobili" -> mobile, "домашний интернет" -> wifi).

Only for the slot the bot has just asked for, and only on a clear match (measured on the demo's
synonyms with USE multilingual v3: right matches score 0.8-0.98 against 0.3-0.45 for the other
value; a bare "sì" scored 0.65 against "mobile data", so it must not count). The typed extractors
and the listed synonyms always go first: this fills only what they left empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from voicebot.core.entities import Entity
from voicebot.dialogue.domain import DomainSpec

Embed = Callable[[Sequence[str]], np.ndarray]
AsyncEmbed = Callable[[str], Awaitable[np.ndarray]]

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

    def match(self, slot: str, vector: np.ndarray, text: str) -> Entity | None:
        """The slot's value the message clearly names, as an entity over the whole message."""
        scored = sorted(((float((vectors @ vector).max()), value) for value, vectors in self._values.get(slot, [])), reverse=True)
        if not scored or scored[0][0] < MIN_SIMILARITY:
            return None
        if len(scored) > 1 and scored[0][0] - scored[1][0] < MIN_MARGIN:
            return None
        similarity, value = scored[0]
        return Entity(slot, "enum", value, text, 0, len(text), round(min(similarity, 0.85), 4))
