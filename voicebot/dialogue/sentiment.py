"""Lexicon sentiment per language: cheap, transparent (the trace shows the words), no weights needed.

It drives hand-off on strongly negative customers, where explainability matters more than nuance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voicebot.dialogue.locales import Locales

_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class SentimentResult:
    score: float  # -1 (angry) .. +1 (happy)
    negative: list[str]
    positive: list[str]


class LexiconSentiment:
    def __init__(self, locales: Locales) -> None:
        self._lexicons: dict[str, dict[str, list[re.Pattern[str]]]] = {}
        for code in ("en", "zh", "zh-tw", "es", "de", "fr"):
            locale = locales.get(code)
            if locale is None:
                continue
            self._lexicons[code] = {
                polarity: [self._compile(word) for word in words] for polarity, words in locale.sentiment.items()
            }

    @staticmethod
    def _compile(word: str) -> re.Pattern[str]:
        escaped = re.escape(word.lower())
        return re.compile(escaped if _CJK.search(word) else rf"(?<!\w){escaped}(?!\w)")

    def score(self, text: str, language: str) -> SentimentResult:
        lowered = text.lower()
        lexicon = self._lexicons.get(language) or self._lexicons.get(language.split("-")[0]) or {}
        negative = [rx.pattern for rx in lexicon.get("negative", []) if rx.search(lowered)]
        positive = [rx.pattern for rx in lexicon.get("positive", []) if rx.search(lowered)]
        raw = len(positive) - 1.5 * len(negative)
        letters = [ch for ch in text if ch.isalpha() and ch.isascii()]
        shouting = len(letters) >= 8 and sum(ch.isupper() for ch in letters) / len(letters) > 0.7
        if negative and (shouting or text.count("!") >= 2 or "！" in text):
            raw -= 1.0
        score = max(-1.0, min(1.0, raw / 2.0))
        clean = lambda items: [re.sub(r"\(\?<!\\w\)|\(\?!\\w\)|\\", "", p) for p in items]  # noqa: E731
        return SentimentResult(round(score, 3), clean(negative), clean(positive))
