"""A trainable multilingual intent classifier that needs no pretrained weights.

Character n-grams (which also cover Chinese, where there are no spaces) plus word n-grams feed a
multinomial logistic regression. Its raw probabilities are under-confident with many intents, so a
temperature fitted on cross-validated scores calibrates them: the out-of-scope threshold then means
what it says (`voicebot train` reports the calibration error). One linear model keeps a call
cheap; the NLU stage batches calls across sessions, which makes it cheaper still.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import softmax
from sklearn.base import clone
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline

from voicebot.pipelines.nlu import oos
from voicebot.pipelines.nlu.base import ranked
from voicebot.pipelines.tfidf_inference import LinearTextModel

FORMAT_VERSION = 3  # 3: carries its fitted out-of-scope threshold


def _features() -> FeatureUnion:
    return FeatureUnion(
        [
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, lowercase=True)),
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=r"(?u)\b\w+\b")),
        ]
    )


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of held-out scores."""

    def nll(log_t: float) -> float:
        probabilities = softmax(scores / np.exp(log_t), axis=1)
        return float(-np.log(probabilities[np.arange(len(truth)), truth] + 1e-12).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def held_out_folds(smallest: int, wanted: int = 3) -> int:
    """How many stratified folds a domain whose smallest intent has ``smallest`` examples allows
    (each fold must hold one of them); 0: too few to score anything held out."""
    return min(wanted, smallest) if smallest >= 2 else 0


class CharNgramIntentClassifier:
    name = "charngram-logreg"

    def __init__(self, C: float = 10.0, class_weight: str | dict[str, float] | None = None) -> None:
        # class_weight "balanced": an intent drafted from 3 messages weighs as much as one with 100
        # (unweighted, its examples lose to the big intents' n-grams they share words with).
        classifier = LogisticRegression(C=C, max_iter=3000, class_weight=class_weight)
        self._pipeline = Pipeline([("features", _features()), ("classifier", classifier)])
        self.labels: list[str] = []
        self.temperature = 1.0
        self.oos_threshold = oos.DEFAULT_THRESHOLD  # fitted on held-out folds (pipelines/nlu/oos.py)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> CharNgramIntentClassifier:
        texts, labels = list(texts), list(labels)
        n_splits = held_out_folds(min(Counter(labels).values()))
        self._pipeline.fit(texts, labels)
        self.labels = [str(label) for label in self._pipeline.classes_]
        if not n_splits:  # an intent of one example: nothing to calibrate on, raw probabilities
            self.temperature, self.oos_threshold = 1.0, oos.DEFAULT_THRESHOLD
            return self
        held_out = self._held_out_scores(texts, labels, n_splits)
        truth = np.array([self.labels.index(str(label)) for label in labels])
        self.temperature = fit_temperature(held_out, truth)
        self.oos_threshold = oos.fit_threshold(softmax(held_out / self.temperature, axis=1), truth, self.labels)
        return self

    def _held_out_scores(self, texts: list[str], labels: list[str], n_splits: int) -> np.ndarray:
        """Decision scores of each example by a model trained on the other folds, columns in
        ``self.labels`` order. A loop, not cross_val_predict: that one encodes the labels as
        integers, which a class_weight table keyed by intent name then no longer matches."""
        scores = np.zeros((len(texts), len(self.labels)))
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=0)
        for train, test in folds.split(texts, labels):
            model = clone(self._pipeline).fit([texts[i] for i in train], [labels[i] for i in train])
            raw = model.decision_function([texts[i] for i in test])
            if raw.ndim == 1:  # two intents: one score
                raw = np.column_stack([-raw, raw])
            scores[np.ix_(test, [self.labels.index(str(c)) for c in model.classes_])] = raw
        return scores

    def _inference(self) -> LinearTextModel:
        """The fitted pipeline without scikit-learn's per-call overhead (pipelines/tfidf_inference.py),
        rebuilt whenever fit or load replaced the pipeline."""
        lean = getattr(self, "_lean", None)
        if lean is None or lean.pipeline is not self._pipeline:
            lean = self._lean = LinearTextModel(self._pipeline)
        return lean

    def _probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self._inference().decision_function(list(texts)) / self.temperature, axis=1)

    def rank_many(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        return ranked(self._probabilities(texts), self.labels)

    def rank(self, text: str) -> list[tuple[str, float]]:
        return self.rank_many([text])[0]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"version": FORMAT_VERSION, "pipeline": self._pipeline, "labels": self.labels, "temperature": self.temperature,
                     "oos_threshold": self.oos_threshold}, path)

    @classmethod
    def load(cls, path: Path) -> CharNgramIntentClassifier:
        data = joblib.load(path)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} was saved by another version of the classifier")
        model = cls()
        model._pipeline, model.labels, model.temperature = data["pipeline"], data["labels"], data["temperature"]
        model.oos_threshold = data["oos_threshold"]
        return model


class TfidfBaseline:
    """Plain word TF-IDF + logistic regression: the yardstick the NLU must clearly beat."""

    name = "tfidf-word-logreg"

    def __init__(self) -> None:
        self._pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("classifier", LogisticRegression(max_iter=2000))])

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TfidfBaseline:
        self._pipeline.fit(list(texts), list(labels))
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [str(label) for label in self._pipeline.predict(list(texts))]
