"""A trainable multilingual intent classifier that needs no pretrained weights.

Character n-grams (which also cover Chinese, where there are no spaces) plus word n-grams feed a
linear SVM; sigmoid calibration over cross-validation folds turns its margins into probabilities
that a threshold can use for the out-of-scope decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

FORMAT_VERSION = 1


def _features() -> FeatureUnion:
    return FeatureUnion(
        [
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, lowercase=True)),
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=r"(?u)\b\w+\b")),
        ]
    )


class CharNgramIntentClassifier:
    name = "charngram-svm"

    def __init__(self, C: float = 0.5) -> None:
        self._pipeline = Pipeline(
            [
                ("features", _features()),
                ("classifier", CalibratedClassifierCV(LinearSVC(C=C), method="sigmoid", cv=3)),
            ]
        )
        self.labels: list[str] = []

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> CharNgramIntentClassifier:
        self._pipeline.fit(list(texts), list(labels))
        self.labels = [str(label) for label in self._pipeline.classes_]
        return self

    def rank_many(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        probabilities = self._pipeline.predict_proba(list(texts))
        result = []
        for row in probabilities:
            order = np.argsort(row)[::-1]
            result.append([(self.labels[i], float(row[i])) for i in order])
        return result

    def rank(self, text: str) -> list[tuple[str, float]]:
        return self.rank_many([text])[0]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"version": FORMAT_VERSION, "pipeline": self._pipeline, "labels": self.labels}, path)

    @classmethod
    def load(cls, path: Path) -> CharNgramIntentClassifier:
        data = joblib.load(path)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} was saved by another version of the classifier")
        model = cls()
        model._pipeline, model.labels = data["pipeline"], data["labels"]
        return model


class TfidfBaseline:
    """Plain word TF-IDF + logistic regression: the yardstick the NLU must clearly beat."""

    name = "tfidf-word-logreg"

    def __init__(self) -> None:
        from sklearn.linear_model import LogisticRegression

        self._pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("classifier", LogisticRegression(max_iter=2000))])

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TfidfBaseline:
        self._pipeline.fit(list(texts), list(labels))
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(label) for label in self._pipeline.predict(list(texts))]
