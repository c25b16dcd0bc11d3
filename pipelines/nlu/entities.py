"""Slot value extraction: typed patterns (email, phone, date, custom) and enum synonyms per language.

Spans never overlap: more specific types are matched first (an email's digits are not an order id).
"""

from __future__ import annotations

import re

from voicebot.core.entities import Entity
from voicebot.dialogue.domain import DomainSpec

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International or national numbers with separators; at least 8 digits in all (checked below).
# The edges are ASCII letters/digits, not \w: in "我的手机号是13800138000" the number touches
# Chinese characters, which \w counts as word characters.
PHONE = re.compile(r"(?<![A-Za-z0-9_+])\+?\d[\d\s().-]{6,}\d(?![A-Za-z0-9_])")
DATE = re.compile(
    r"(?<!\d)(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{4}年\d{1,2}月\d{1,2}日)(?!\d)"
)
_TYPE_ORDER = {"email": 0, "phone": 1, "date": 2, "pattern": 3, "enum": 4}
_CJK = re.compile(r"[\u3400-\u9fff]")


def _normalise_date(raw: str) -> str:
    numbers = [int(n) for n in re.findall(r"\d+", raw)]
    if re.match(r"\d{4}", raw):
        year, month, day = numbers
    else:
        day, month, year = numbers
        year += 2000 if year < 100 else 0
    return f"{year:04d}-{month:02d}-{day:02d}"


class EntityExtractor:
    def __init__(self, spec: DomainSpec) -> None:
        self._slots = sorted(spec.slots.items(), key=lambda item: _TYPE_ORDER[item[1].type])
        self._patterns = {name: re.compile(slot.pattern) for name, slot in spec.slots.items() if slot.pattern}
        # language -> slot -> [(compiled synonym, canonical value)], longest synonyms first
        self._synonyms: dict[str, dict[str, list[tuple[re.Pattern[str], str]]]] = {}
        for name, slot in spec.slots.items():
            for value, per_language in slot.values.items():
                for language, synonyms in per_language.items():
                    bucket = self._synonyms.setdefault(language, {}).setdefault(name, [])
                    for synonym in [value, *synonyms]:
                        bucket.append((self._synonym_regex(synonym), value))
        for per_slot in self._synonyms.values():
            for bucket in per_slot.values():
                bucket.sort(key=lambda item: -len(item[0].pattern))

    @staticmethod
    def _synonym_regex(synonym: str) -> re.Pattern[str]:
        escaped = re.escape(synonym.lower())
        if _CJK.search(synonym):
            return re.compile(escaped)
        return re.compile(rf"(?<!\w){escaped}(?!\w)")

    def extract(self, text: str, language: str) -> list[Entity]:
        taken: list[tuple[int, int]] = []
        found: list[Entity] = []

        def free(start: int, end: int) -> bool:
            return all(end <= s or start >= e for s, e in taken)

        def add(slot: str, value: str, match_text: str, start: int, end: int, confidence: float) -> None:
            taken.append((start, end))
            found.append(Entity(slot, kinds[slot], value, match_text, start, end, confidence))

        kinds = {name: slot.type for name, slot in self._slots}
        lowered = text.lower()
        for name, slot in self._slots:
            if slot.type == "email":
                for m in EMAIL.finditer(text):
                    if free(*m.span()):
                        add(name, m.group().lower(), m.group(), *m.span(), 0.99)
            elif slot.type == "phone":
                for m in PHONE.finditer(text):
                    digits = re.sub(r"\D", "", m.group())
                    if 8 <= len(digits) <= 15 and free(*m.span()):
                        value = ("+" if m.group().startswith("+") else "") + digits
                        add(name, value, m.group(), *m.span(), 0.9)
            elif slot.type == "date":
                for m in DATE.finditer(text):
                    try:
                        value = _normalise_date(m.group())
                    except ValueError:
                        continue
                    if free(*m.span()):
                        add(name, value, m.group(), *m.span(), 0.9)
            elif slot.type == "pattern":
                for m in self._patterns[name].finditer(text):
                    if free(*m.span()):
                        add(name, m.group(), m.group(), *m.span(), 0.95)
            elif slot.type == "enum":
                candidates = self._synonyms.get(language, {}).get(name, [])
                # Synonyms of other languages are weaker evidence but still count (mixed-language users).
                others = [(lang, b.get(name, [])) for lang, b in self._synonyms.items() if lang != language]
                for confidence, bucket in [(0.9, candidates), *[(0.6, b) for _, b in others]]:
                    hit = next(((rx, value) for rx, value in bucket if (m := rx.search(lowered)) and free(*m.span())), None)
                    if hit:
                        m = hit[0].search(lowered)
                        assert m is not None
                        add(name, hit[1], text[m.start():m.end()], m.start(), m.end(), confidence)
                        break
        return sorted(found, key=lambda e: e.start)

    @staticmethod
    def mask(text: str, entities: list[Entity]) -> str:
        """Replace typed values by their slot name so the classifier learns the shape, not the digits."""
        out, last = [], 0
        for entity in sorted(entities, key=lambda e: e.start):
            if entity.kind != "enum":
                out.append(text[last:entity.start])
                out.append(f" {entity.slot.upper()} ")
                last = entity.end
        out.append(text[last:])
        return "".join(out)
