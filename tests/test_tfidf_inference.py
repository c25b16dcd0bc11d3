"""The per-turn TF-IDF path (pipelines/tfidf_inference.py) gives the numbers scikit-learn's own
``transform`` / ``decision_function`` / ``predict_proba`` give, on the demo domain's real models
and texts: the intents, languages and articles a customer gets cannot change with it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from voicebot.dialogue.domain import load_domain
from voicebot.dialogue.knowledge import KnowledgeBase
from voicebot.pipelines.lid.text import TextLanguageDetector
from voicebot.pipelines.nlu.charngram import CharNgramIntentClassifier
from voicebot.pipelines.tfidf_inference import LinearTextModel, TfidfTransform
from voicebot.resources import demo_domain_dir

# What customers type besides the domain's own examples: typos, ids, other scripts, emoji,
# nothing at all, words no model has seen.
ODD_TEXTS = ["", "   ", "wher is my ordr??", "12345", "jean.dupont@example.com", "我的订单到哪了", "🙂🙂", "Ünïcödé ß",
             "zzzz qqqq xxxx", "HI THERE", "a"]


@pytest.fixture(scope="module")
def demo():
    domain, _ = load_domain(demo_domain_dir())
    assert domain is not None
    texts = [(text, language, intent) for language, intents in domain.examples.items()
             for intent, examples in intents.items() for text in examples]
    return domain, texts


def test_intent_model_scores_match_scikit_learn(demo) -> None:
    _, examples = demo
    texts, labels = [t for t, _, _ in examples], [i for _, _, i in examples]
    model = CharNgramIntentClassifier().fit(texts, labels)
    queries = texts + ODD_TEXTS
    expected = model._pipeline.decision_function(queries)
    lean = LinearTextModel(model._pipeline)
    assert lean.parts is not None  # the fast path is taken, not the fallback
    np.testing.assert_allclose(lean.decision_function(queries), expected, rtol=1e-12, atol=1e-12)
    # One text at a time (a batch of one, the quiet server's case) too.
    np.testing.assert_allclose(np.vstack([lean.decision_function([q]) for q in queries[:40]]), expected[:40], rtol=1e-12, atol=1e-12)
    assert model.rank("where is my order?")[0][0] == "order_status"


def test_language_model_probabilities_match_scikit_learn(demo) -> None:
    _, examples = demo
    detector = TextLanguageDetector(sorted({lang for _, lang, _ in examples}))
    detector.fit_domain([t for t, _, _ in examples], [lang for _, lang, _ in examples])
    queries = [t for t, _, _ in examples] + ODD_TEXTS
    pipeline = detector._domain_model
    assert pipeline is not None
    expected = pipeline.predict_proba(queries)
    got = detector.domain_scores_many(queries)
    classes = [str(c) for c in pipeline.classes_]
    np.testing.assert_allclose([[row[c] for c in classes] for row in got], expected, rtol=1e-12, atol=1e-12)


def test_knowledge_fields_match_scikit_learn(demo) -> None:
    domain, examples = demo
    kb = KnowledgeBase(domain)
    queries = [t for t, _, _ in examples][::3] + ODD_TEXTS + [a.title for arts in domain.articles.values() for a in arts]
    checked = 0
    for index in kb._indexes.values():
        for field in (index.topic, index.body, index.sound):
            if field is None:
                continue
            vectorizer = field.query.vectorizer
            for query in queries:
                expected = (field.matrix @ vectorizer.transform([query]).T).toarray().ravel()
                np.testing.assert_allclose(field.cosines(field.query.analyze(query)), expected, rtol=1e-12, atol=1e-12)
                checked += 1
    assert checked > 100


def test_an_unreproduced_configuration_falls_back_to_scikit_learn() -> None:
    documents = ["refund policy", "return an item", "shipping costs to France"]
    for vectorizer in (TfidfVectorizer(binary=True), TfidfVectorizer(norm="l1"), TfidfVectorizer(dtype=np.float32),
                       TfidfVectorizer(sublinear_tf=False, use_idf=False)):
        vectorizer.fit(documents)
        transform = TfidfTransform(vectorizer)
        queries = ["refund refund policy", "return", "nothing known"]
        np.testing.assert_allclose(transform.transform(queries).toarray(), vectorizer.transform(queries).toarray(), rtol=1e-6)
