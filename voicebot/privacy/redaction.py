"""Find and replace personal data in customer-service text: e-mails, phone numbers, payment cards
and IBANs (plus an integrator's own patterns).

Conversations become training data (`voicebot export-dataset`); what a model learns must not
contain the customers' contact or payment details. The facts a support answer is about must stay,
though: 5-digit order ids, dates, amounts like 89.90 and times are never touched, or a fine-tuned
model would learn to drop them. So numbers are not blanked wholesale: a card must pass the Luhn
check and an IBAN the mod-97 check (a random long number is left alone), and dates and amounts are
fenced off before phone numbers are looked for.

Text in scripts without spaces (Chinese: ``电话13812345678``) is handled by never relying on ``\\b``:
digits are delimited by what is around them, not by word boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# IBAN: country code and check digits, then the BBAN printed in groups (single spaces) or not.
IBAN_START = re.compile(r"(?<![A-Za-z0-9])(?=([A-Za-z]{2}\d{2}[A-Za-z0-9]*(?: [A-Za-z0-9]+)*))")
DATES = (
    re.compile(r"(?<![\d.\-/])(?P<y>\d{4})(?P<s>[-./])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})(?![.\-/]?\d)"),
    re.compile(r"(?<![\d.\-/])(?P<a>\d{1,2})(?P<s>[-./])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})(?![.\-/]?\d)"),
)
AMOUNT = re.compile(r"(?<![\d.,])(?:\d{1,3}(?:[.,]\d{3})+|\d+)[.,]\d{2}(?![.,]?\d)")
DIGITS = re.compile(r"\d+")
# What may sit between the digit groups of one phone number: one separator, or brackets.
PHONE_GAP = re.compile(r"[ \-./]|\)[ \-]?|[ \-]?\(")
CARD_GAPS = (" ", "-")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Finding:
    """One redacted value: its kind (``email``, ``phone``, ``card``, ``iban`` or an extra pattern's
    name) and where it was in the original text. The value itself is kept out of ``repr`` so
    logging a finding does not log the personal data."""

    kind: str
    start: int
    end: int
    value: str = field(repr=False)

    @property
    def placeholder(self) -> str:
        return f"<{self.kind.upper()}>"


def redact(text: str, extra_patterns: Mapping[str, str | re.Pattern[str]] | None = None) -> tuple[str, list[Finding]]:
    """``text`` with personal data replaced by ``<EMAIL>``, ``<PHONE>``, ``<CARD>``, ``<IBAN>`` (and
    ``<NAME>`` for each extra pattern ``name -> regex``, which win over the built-in ones), and
    what was replaced, in order."""
    texts, findings = redact_many([text], extra_patterns)
    return texts[0], findings[0]


def redact_many(texts: Sequence[str], extra_patterns: Mapping[str, str | re.Pattern[str]] | None = None
                ) -> tuple[list[str], list[list[Finding]]]:
    """Redact several texts that belong together (a prompt and its answer): a value found in one
    is replaced in all of them with the same placeholder, even where the context around it alone
    would not have given it away."""
    extra = _compile(extra_patterns or {})
    found = [_Scanner(text, extra).scan() for text in texts]
    values = sorted({(f.value, f.kind) for scanner in found for f in scanner.findings}, key=lambda item: -len(item[0]))
    results: list[str] = []
    all_findings: list[list[Finding]] = []
    for text, scanner in zip(texts, found, strict=True):
        for value, kind in values:  # values another text gave away
            for match in re.finditer(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", text):
                scanner.take(kind, match.start(), match.end())
        findings = sorted(scanner.findings, key=lambda f: f.start)
        all_findings.append(findings)
        results.append(_render(text, findings))
    return results, all_findings


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: 15..34 letters/digits, check digits by mod 97 of the rearranged number."""
    compact = compact.upper()
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit() and compact.isalnum() and compact.isascii()):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _compile(patterns: Mapping[str, str | re.Pattern[str]]) -> list[tuple[str, re.Pattern[str]]]:
    compiled = []
    for name, pattern in patterns.items():
        if not NAME.fullmatch(name):
            raise ValueError(f"an extra pattern's name must be a word (letters, digits, _), not {name!r}")
        compiled.append((name.lower(), re.compile(pattern) if isinstance(pattern, str) else pattern))
    return compiled


def _render(text: str, findings: list[Finding]) -> str:
    parts, position = [], 0
    for finding in findings:
        parts += [text[position:finding.start], finding.placeholder]
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)


class _Scanner:
    """Detectors run in order of confidence; each claims spans the later ones may not touch."""

    def __init__(self, text: str, extra: list[tuple[str, re.Pattern[str]]]) -> None:
        self.text = text
        self.extra = extra
        self.claimed: list[tuple[int, int]] = []  # redacted and protected spans
        self.findings: list[Finding] = []

    def free(self, start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in self.claimed)

    def take(self, kind: str, start: int, end: int) -> None:
        if start < end and self.free(start, end):
            self.claimed.append((start, end))
            self.findings.append(Finding(kind, start, end, self.text[start:end]))

    def protect(self, start: int, end: int) -> None:
        self.claimed.append((start, end))

    def scan(self) -> _Scanner:
        for name, pattern in self.extra:
            for match in pattern.finditer(self.text):
                self.take(name, match.start(), match.end())
        for match in EMAIL.finditer(self.text):
            self.take("email", match.start(), match.end())
        self._ibans()
        self._dates_and_amounts()
        for run in self._digit_runs():
            self._cards_and_phones(run)
        return self

    def _ibans(self) -> None:
        for match in IBAN_START.finditer(self.text):
            start = match.start()
            if not self.free(start, start + 1):
                continue
            # The lookahead runs on into the words after an IBAN: try the longest run of whole
            # groups first, then shorter ones.
            tokens = match.group(1).split(" ")[:12]
            ends = [start + len(" ".join(tokens[:n])) for n in range(1, len(tokens) + 1)]
            valid = next((end for end in reversed(ends) if iban_valid(self.text[start:end].replace(" ", ""))), None)
            if valid is not None:
                self.take("iban", start, valid)
                continue
            # IBAN-shaped (groups with digits, 15+ characters) but failing the check: left as it
            # is, and not taken apart into "phone numbers" either.
            shaped = 1
            while shaped < len(tokens) and any(c.isdigit() for c in tokens[shaped]):
                shaped += 1
            if len("".join(tokens[:shaped])) >= 15:
                self.protect(start, ends[shaped - 1])

    def _dates_and_amounts(self) -> None:
        for pattern in DATES:
            for match in pattern.finditer(self.text):
                parts = match.groupdict()
                if "m" in parts:
                    plausible = 1 <= int(parts["m"]) <= 12 and 1 <= int(parts["d"]) <= 31
                else:  # day-month or month-day
                    a, b = int(parts["a"]), int(parts["b"])
                    plausible = 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12
                if plausible:
                    self.protect(match.start(), match.end())
        for match in AMOUNT.finditer(self.text):
            self.protect(match.start(), match.end())

    def _digit_runs(self) -> list[list[tuple[int, int]]]:
        """Digit groups not already claimed, joined into runs by phone-number separators. A group
        glued to a Latin letter (A320, 5G, DE89) is part of a word, not of a number."""
        groups = [m.span() for m in DIGITS.finditer(self.text) if self.free(*m.span())]
        runs: list[list[tuple[int, int]]] = []
        for start, end in groups:
            if runs and PHONE_GAP.fullmatch(self.text[runs[-1][-1][1]:start]):
                runs[-1].append((start, end))
            else:
                runs.append([(start, end)])
        text = self.text
        for run in runs:
            if run and run[0][0] > 0 and _latin(text[run[0][0] - 1]):
                run.pop(0)
            if run and run[-1][1] < len(text) and _latin(text[run[-1][1]]):
                run.pop()
        return [run for run in runs if run]

    def _cards_and_phones(self, run: list[tuple[int, int]]) -> None:
        start = run[0][0]
        international = self.text[max(0, start - 2):start].rstrip(" (").endswith("+")
        rest: list[list[tuple[int, int]]] = [[]]
        index = 0
        while index < len(run):
            card_end = None if international else self._card_at(run, index)
            if card_end is None:
                rest[-1].append(run[index])
                index += 1
                continue
            self.take("card", run[index][0], run[card_end][1])
            rest.append([])
            index = card_end + 1
        for part in rest:
            if part:
                self._phone(part, international and part[0] == run[0])

    def _card_at(self, run: list[tuple[int, int]], first: int) -> int | None:
        """The last group of the longest Luhn-valid 13..19-digit card number starting at ``first``."""
        for last in range(len(run) - 1, first - 1, -1):
            gaps = [self.text[run[i][1]:run[i + 1][0]] for i in range(first, last)]
            digits = "".join(self.text[s:e] for s, e in run[first:last + 1])
            if all(gap in CARD_GAPS for gap in gaps) and 13 <= len(digits) <= 19 and luhn_valid(digits):
                return last
        return None

    def _phone(self, part: list[tuple[int, int]], international: bool) -> None:
        digits = "".join(self.text[s:e] for s, e in part)
        if not 8 <= len(digits) <= 15:
            return
        if len(digits) > 12 and not (international or digits.startswith("00")):
            return  # long numbers without a country prefix are account or card-like numbers
        if len(part) > 1 and all(e - s == 5 for s, e in part):
            return  # a list of 5-digit order ids
        start, end = part[0][0], part[-1][1]
        lead = re.search(r"(?:\+ ?\(?|\()$", self.text[:start])
        if lead:
            start = lead.start()
        if end < len(self.text) and self.text[end] == ")" and "(" in self.text[start:end]:
            end += 1
        self.take("phone", start, end)


def _latin(char: str) -> bool:
    return char.isascii() and (char.isalpha() or char == "_")
