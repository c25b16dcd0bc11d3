"""Text language identification: langdetect (seeded) combined with a domain-trained n-gram model.

langdetect alone is random unless seeded and unreliable on one or two words ("ok" -> sk); the
domain model, trained on the domain's own examples per language, knows customer-service phrasing.
The caller decides whether the evidence is strong enough to switch the session's language.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import numpy as np
from langdetect import DetectorFactory, LangDetectException, detect_langs
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from voicebot.core.languages import normalise_language_tag
from voicebot.pipelines.tfidf_inference import LinearTextModel

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_TRADITIONAL_ONLY = set("這個們來說對時會過還點從於當發問題無請謝幫訂單號碼網路帳戶密碼")


def letter_count(text: str) -> int:
    return len(_LETTER.findall(text))


class TextLanguageDetector:
    def __init__(self, supported: Sequence[str], seed: int = 0) -> None:
        self.supported = [normalise_language_tag(code) for code in supported]
        self._seed = seed
        self._lock = threading.Lock()  # langdetect's factory seed is global state
        self._domain_model: Pipeline | None = None
        self._domain_inference: LinearTextModel | None = None  # the same model without per-call overhead

    def fit_domain(self, texts: Sequence[str], languages: Sequence[str]) -> None:
        if len(set(languages)) < 2:
            # A one-language domain has no languages to tell apart: langdetect alone scores.
            self._domain_model = self._domain_inference = None
            return
        model = Pipeline(
            [
                ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)),
                ("classifier", LogisticRegression(max_iter=2000, C=5.0)),
            ]
        )
        model.fit(list(texts), list(languages))
        self._domain_model, self._domain_inference = model, LinearTextModel(model)

    def _langdetect_scores(self, text: str) -> dict[str, float]:
        with self._lock:
            DetectorFactory.seed = self._seed
            try:
                found = detect_langs(text)
            except LangDetectException:
                return {}
        scores: dict[str, float] = {}
        for item in found:
            code = normalise_language_tag(item.lang)
            if code == "zh-tw" and "zh-tw" not in self.supported:
                code = "zh"
            scores[code] = scores.get(code, 0.0) + float(item.prob)
        return scores

    def domain_scores_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """The domain model's scores for many texts in one call (the language stage batches)."""
        if self._domain_model is None or self._domain_inference is None:
            return [{} for _ in texts]
        probabilities = self._domain_inference.predict_proba(list(texts))
        classes = [str(lang) for lang in self._domain_model.classes_]
        return [dict(zip(classes, map(float, row), strict=True)) for row in probabilities]

    def scores(self, text: str, domain: dict[str, float] | None = None, use_langdetect: bool = True) -> dict[str, dict[str, float]]:
        """Per-source and combined scores over the supported languages."""
        han, kana = len(_HAN.findall(text)), len(_KANA_HANGUL.findall(text))
        letters = max(letter_count(text), 1)
        detected = self._langdetect_scores(text) if use_langdetect else {}
        if domain is None:
            domain = self.domain_scores_many([text])[0]
        if detected and domain:
            # The domain model knows only the languages the domain has examples in. Its half of the
            # vote counts as much as langdetect believes the text is in one of them at all; the rest
            # goes to the other languages langdetect sees (a conversation may be held in any language
            # with framework messages), or an Italian message would lose half its score to Spanish.
            in_domain = sum(score for lang, score in detected.items() if lang in domain)
            combined = {lang: 0.5 * detected.get(lang, 0.0) + 0.5 * (domain[lang] * in_domain if lang in domain else detected.get(lang, 0.0) * (1 - in_domain))
                        for lang in self.supported}
        else:
            combined = {lang: (detected or domain).get(lang, 0.0) for lang in self.supported}
        if han / letters > 0.3 and kana == 0:
            # Han script without kana/hangul is Chinese whatever langdetect guesses (it says ja/ko on short text).
            chinese = "zh-tw" if "zh-tw" in self.supported and any(ch in _TRADITIONAL_ONLY for ch in text) else "zh"
            combined = {lang: (0.98 if lang == chinese else 0.02 / max(len(self.supported) - 1, 1)) for lang in self.supported}
        total = sum(combined.values())
        if total > 0:
            combined = {lang: round(score / total, 4) for lang, score in combined.items()}
        return {
            "combined": dict(sorted(combined.items(), key=lambda kv: -kv[1])),
            "langdetect": {k: round(v, 4) for k, v in sorted(detected.items(), key=lambda kv: -kv[1])[:3]},
            "domain_model": {k: round(v, 4) for k, v in sorted(domain.items(), key=lambda kv: -kv[1])[:3]},
        }

    @staticmethod
    def best(scores: dict[str, float]) -> tuple[str | None, float]:
        if not scores:
            return None, 0.0
        language = max(scores, key=lambda k: scores[k])
        return language, float(np.round(scores[language], 4))

    @staticmethod
    def is_cjk(text: str) -> bool:
        return bool(_HAN.search(text))
