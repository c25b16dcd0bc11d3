"""Knowledge-base retrieval: a TF-IDF ranking per language, with the fallback language behind it.

Character n-grams make it work for Chinese (no spaces) and tolerate typos and inflection in the
European languages; title and keywords count more than the body.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from voicebot.dialogue.domain import Article, Domain


@dataclass
class Hit:
    article: Article
    score: float


class _LanguageIndex:
    """Two fields: the short one (title + keywords) decides the topic, the body breaks ties."""

    def __init__(self, articles: list[Article]) -> None:
        self.articles = articles
        self.fields = []
        for weight, documents in (
            (0.65, [" ".join([a.title, *a.keywords]) for a in articles]),
            (0.35, [" ".join([a.title, a.body]) for a in articles]),
        ):
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
            self.fields.append((weight, vectorizer, vectorizer.fit_transform(documents)))

    def search(self, query: str, top_k: int) -> list[Hit]:
        scores = sum(w * (m @ v.transform([query]).T).toarray().ravel() for w, v, m in self.fields)
        order = np.argsort(scores)[::-1][:top_k]
        return [Hit(self.articles[i], round(float(scores[i]), 4)) for i in order]


class KnowledgeBase:
    def __init__(self, domain: Domain, min_score: float = 0.12) -> None:
        self.min_score = min_score
        self._indexes = {lang: _LanguageIndex(arts) for lang, arts in domain.articles.items() if arts}
        self._by_id = {(a.language, a.id): a for arts in domain.articles.values() for a in arts}

    def search(self, query: str, language: str, top_k: int = 3) -> list[Hit]:
        index = self._indexes.get(language)
        return index.search(query, top_k) if index else []

    def article(self, article_id: str, language: str) -> Article | None:
        return self._by_id.get((language, article_id))

    def answer(self, query: str, chain: list[str], top_k: int = 3) -> tuple[Article | None, list[Hit], str | None]:
        """Best article for ``query`` in the first language of ``chain`` that has one.

        Returns the article to show (in the best available language), the ranking used, and the
        language the ranking was done in.
        """
        for language in chain:
            hits = self.search(query, language, top_k)
            if hits and hits[0].score >= self.min_score:
                best = hits[0].article
                # Show it in the user's language if it exists there, even when ranked elsewhere.
                for shown_in in chain:
                    localized = self.article(best.id, shown_in)
                    if localized:
                        return localized, hits, language
        return None, [], None
