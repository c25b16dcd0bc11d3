"""Fitted scikit-learn TF-IDF models applied to a chat turn's few short texts, without the
per-call overhead.

Why: on a chat turn scikit-learn spends far more time checking than computing. For the six short
texts of one NLU batch, ``Pipeline.decision_function`` of the n-gram intent model took 1.9 ms, of
which the analyzers (the actual n-gram extraction) took 0.04 ms and the linear model's product
0.005 ms; the rest is parameter and input validation, ``FeatureUnion``'s joblib dispatch and
sparse-format conversions, paid again by every call of every model (intent, language, the
knowledge base's three fields). This module does the same arithmetic with the fitted model's own
pieces (its analyzer, vocabulary, idf and coefficients) and scikit-learn's own row normaliser, so
the numbers are the ones ``transform`` gives (tests/test_tfidf_inference.py compares them on every
example of the demo domain). Only fitting goes through scikit-learn's full API.

A vectorizer configured in a way this does not reproduce (binary counts, an l1 norm, another
dtype) is simply handed back to its own ``transform``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils.extmath import softmax
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l2


def lean_sklearn() -> Any:
    """scikit-learn's configuration for calls on inputs built here (finite floats, fitted
    estimators with validated parameters): skips re-checking them on every call."""
    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


class TfidfTransform:
    """``TfidfVectorizer.transform`` of a fitted vectorizer for a few short texts."""

    def __init__(self, vectorizer: TfidfVectorizer) -> None:
        self.vectorizer = vectorizer
        self.analyze: Callable[[str], list[str]] = vectorizer.build_analyzer()
        self.vocabulary: dict[str, int] = vectorizer.vocabulary_
        self.width = len(self.vocabulary)
        self.idf: np.ndarray | None = vectorizer.idf_ if vectorizer.use_idf else None
        self.sublinear = bool(vectorizer.sublinear_tf)
        self.norm = vectorizer.norm
        self.exact = (not vectorizer.binary and vectorizer.norm in ("l2", None)
                      and np.dtype(vectorizer.dtype) == np.float64)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        if not self.exact:
            return self.vectorizer.transform(list(texts))
        return self.transform_analyzed([self.analyze(text) for text in texts])

    def transform_analyzed(self, documents: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """As ``transform``, for texts already split by ``self.analyze`` (two vectorizers with the
        same analyzer settings can share one analysis)."""
        indptr = [0]
        indices: list[int] = []
        counts: list[int] = []
        vocabulary = self.vocabulary
        for terms in documents:
            found: dict[int, int] = {}
            for term in terms:
                index = vocabulary.get(term)
                if index is not None:
                    found[index] = found.get(index, 0) + 1
            for index in sorted(found):  # scikit-learn sorts each row's columns
                indices.append(index)
                counts.append(found[index])
            indptr.append(len(indices))
        data = np.asarray(counts, dtype=np.float64)
        columns = np.asarray(indices, dtype=np.int32)
        if self.sublinear:
            np.log(data, out=data)
            data += 1.0
        if self.idf is not None:
            data *= self.idf[columns]
        matrix = sp.csr_matrix((data, columns, np.asarray(indptr, dtype=np.int32)), shape=(len(documents), self.width))
        if self.norm == "l2":
            inplace_csr_row_normalize_l2(matrix)
        return matrix


class LinearTextModel:
    """A fitted ``Pipeline([(features: TfidfVectorizer | FeatureUnion of them), (classifier:
    linear model)])`` for per-turn calls: features through `TfidfTransform`, the classifier's own
    ``decision_function`` / ``predict_proba`` under `lean_sklearn`. Any other pipeline shape keeps
    the pipeline's own methods."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        features, self.classifier = pipeline.steps[0][1], pipeline.steps[-1][1]
        self.parts: list[TfidfTransform] | None = None
        if len(pipeline.steps) == 2 and isinstance(features, TfidfVectorizer):
            self.parts = [TfidfTransform(features)]
        elif (len(pipeline.steps) == 2 and isinstance(features, FeatureUnion) and features.transformer_weights is None
              and all(isinstance(t, TfidfVectorizer) for _, t in features.transformer_list)):
            self.parts = [TfidfTransform(t) for _, t in features.transformer_list]

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        assert self.parts is not None
        blocks = [part.transform(texts) for part in self.parts]
        return blocks[0] if len(blocks) == 1 else sp.hstack(blocks, format="csr")

    def _scores(self, features: sp.csr_matrix) -> np.ndarray:
        """``LinearClassifierMixin.decision_function``'s arithmetic (features @ coef.T +
        intercept), without its checks; another classifier's own method otherwise."""
        coef = getattr(self.classifier, "coef_", None)
        if isinstance(self.classifier, LinearClassifierMixin) and isinstance(coef, np.ndarray) and coef.ndim == 2:
            scores = np.asarray(features @ coef.T) + self.classifier.intercept_
            return scores.reshape(-1) if scores.shape[1] == 1 else scores
        with lean_sklearn():
            return self.classifier.decision_function(features)

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        if self.parts is None:
            return self.pipeline.decision_function(list(texts))
        return self._scores(self.features(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """As the pipeline's; a multinomial logistic regression's softmax of the scores is done
        here, as ``LogisticRegression.predict_proba`` does it, anything else by the classifier."""
        if self.parts is None:
            return self.pipeline.predict_proba(list(texts))
        if isinstance(self.classifier, LogisticRegression) and len(self.classifier.classes_) > 2:
            return softmax(self._scores(self.features(texts)), copy=False)
        with lean_sklearn():
            return self.classifier.predict_proba(self.features(texts))
