"""Knowledge-base retrieval: a lexical TF-IDF ranking per language plus, with a sentence encoder,
a semantic one across languages; the fallback language behind the user's.

Character n-grams make the lexical ranking work for Chinese (no spaces) and tolerate typos and
inflection in the European languages; title and keywords count more than the body. They find
nothing when the question is in a language the article is not written in: a Japanese question
shares no characters with an English article. The encoder's vectors do (USE multilingual v3 maps
both into one space; measured on the demo: 0.34-0.56 cosine for the right article, under 0.1 for
an unrelated question), so the semantic score is added on top of the lexical one: it can only
lift an article, never sink one the words already found. Both scores go to the trace.

Spoken questions arrive through speech recognition, which mishears by sound and splits words
elsewhere: "refund policy" came back "reef and policy", whose written n-grams match "refund" no
better than "return" (0.254 vs 0.246), so a slightly higher cosine for return_policy (0.18 vs 0.14)
decided. Title and keywords are therefore also matched by how they sound (voicebot.dialogue.phonetic:
"reef and" and "refund" share the key RFNT), and the better of the written and the sounded match
counts for the topic field: sound evidence can lift an article, never sink one the spelling found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from voicebot.dialogue.domain import Article, Domain
from voicebot.dialogue.phonetic import sound_key
from voicebot.pipelines.tfidf_inference import TfidfTransform

Embed = Callable[[Sequence[str]], np.ndarray]

TOPIC_WEIGHT, BODY_WEIGHT = 0.65, 0.35  # of the lexical score
SEMANTIC_WEIGHT = 0.5
SEMANTIC_FLOOR = 0.1  # cosine of unrelated texts: adds nothing


@dataclass
class Hit:
    article: Article
    score: float
    lexical: float = 0.0
    semantic: float | None = None  # None: no encoder
    phonetic: float = 0.0  # title + keywords matched by sound (0 for scripts without Latin letters)



@dataclass
class _Field:
    """One field's TF-IDF index: the articles' rows and the fitted vectorizer's query transform."""

    query: TfidfTransform
    matrix: Any

    def cosines(self, terms: list[str]) -> np.ndarray:
        """Cosine of each article with a query already split into this field's n-grams."""
        return (self.matrix @ self.query.transform_analyzed([terms]).T).toarray().ravel()


def _char_ngrams(documents: list[str], analyzer: str) -> _Field | None:
    """A TF-IDF index of ``documents``' character 2-4-grams; None when they have none."""
    vectorizer = TfidfVectorizer(analyzer=analyzer, ngram_range=(2, 4), sublinear_tf=True)
    try:
        matrix = vectorizer.fit_transform(documents)
    except ValueError:  # empty vocabulary: no document has a single n-gram (no Latin letters to sound)
        return None
    return _Field(TfidfTransform(vectorizer), matrix)


def _cosines(field: _Field | None, query: str, count: int, terms: list[str] | None = None) -> np.ndarray:
    if field is None or not query:
        return np.zeros(count)
    return field.cosines(field.query.analyze(query) if terms is None else terms)


class _LanguageIndex:
    """Two fields: the short one (title + keywords) decides the topic, the body breaks ties. The
    topic is matched as written and as it sounds; the better of the two counts."""

    def __init__(self, articles: list[Article], embed: Embed | None) -> None:
        self.articles = articles
        self.topic = _char_ngrams([" ".join([a.title, *a.keywords]) for a in articles], "char_wb")
        self.body = _char_ngrams([" ".join([a.title, a.body]) for a in articles], "char_wb")
        # Each title and keyword keyed on its own: a key spans one phrase, never two.
        self.sound = _char_ngrams([" ".join(sound_key(p) for p in [a.title, *a.keywords]) for a in articles], "char")
        # Title + keywords and the whole article, averaged: a question may echo either.
        self.vectors: list[np.ndarray] = []
        if embed is not None:
            self.vectors = [embed([" ".join([a.title, *a.keywords]) for a in articles]),
                            embed([" ".join([a.title, *a.keywords, a.body]) for a in articles])]

    def search(self, query: str, top_k: int, query_vector: np.ndarray | None) -> list[Hit]:
        count = len(self.articles)
        # Topic and body are indexed with the same analyzer settings: the query is split once.
        any_written = self.topic or self.body
        terms = any_written.query.analyze(query) if any_written and query else None
        written = _cosines(self.topic, query, count, terms)
        phonetic = _cosines(self.sound, sound_key(query), count)
        lexical = TOPIC_WEIGHT * np.maximum(written, phonetic) + BODY_WEIGHT * _cosines(self.body, query, count, terms)
        semantic = None
        scores = np.asarray(lexical, dtype=float)
        if query_vector is not None and self.vectors:
            semantic = np.mean([vectors @ query_vector for vectors in self.vectors], axis=0)
            scores = scores + SEMANTIC_WEIGHT * np.clip(semantic - SEMANTIC_FLOOR, 0, None)
        order = np.argsort(scores)[::-1][:top_k]
        return [Hit(self.articles[i], round(float(scores[i]), 4), round(float(lexical[i]), 4),
                    None if semantic is None else round(float(semantic[i]), 4), round(float(phonetic[i]), 4)) for i in order]


class KnowledgeBase:
    def __init__(self, domain: Domain, min_score: float = 0.12, embed: Embed | None = None) -> None:
        self.min_score = min_score
        self.semantic = embed is not None
        self._indexes = {lang: _LanguageIndex(arts, embed) for lang, arts in domain.articles.items() if arts}
        self._by_id = {(a.language, a.id): a for arts in domain.articles.values() for a in arts}

    def search(self, query: str, language: str, top_k: int = 3, query_vector: np.ndarray | None = None) -> list[Hit]:
        index = self._indexes.get(language)
        return index.search(query, top_k, query_vector) if index else []

    def article(self, article_id: str, language: str) -> Article | None:
        return self._by_id.get((language, article_id))

    def answer(self, query: str, chain: list[str], top_k: int = 3,
               query_vector: np.ndarray | None = None) -> tuple[Article | None, list[Hit], str | None]:
        """Best article for ``query`` in the first language of ``chain`` that has one.

        Returns the article to show (in the best available language), the ranking used, and the
        language the ranking was done in.
        """
        for language in chain:
            hits = self.search(query, language, top_k, query_vector)
            if hits and hits[0].score >= self.min_score:
                best = hits[0].article
                # Show it in the user's language if it exists there, even when ranked elsewhere.
                for shown_in in chain:
                    localized = self.article(best.id, shown_in)
                    if localized:
                        return localized, hits, language
        return None, [], None
