"""Optional intent classifier on sentence embeddings (any sentence-transformers model folder or id).

A multilingual embedding model generalises across phrasings and languages better than n-grams
when one is available; the default stays the n-gram model, which needs no weights at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import LogisticRegression

FORMAT_VERSION = 1


class EmbeddingIntentClassifier:
    name = "embedding-logreg"

    class Options(BaseModel):
        """``[nlu]`` settings when ``backend = "embedding"``."""

        model_config = ConfigDict(extra="forbid")
        model: str = Field(description="sentence-transformers model folder or id")
        device: str | None = None

    def __init__(self, model: str, device: str | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # the extra is optional
            raise RuntimeError("nlu.backend = 'embedding' needs: pip install 'voicebot[embeddings]'") from exc
        self.model_name = str(model)
        self._encoder = SentenceTransformer(self.model_name, device=device)
        self._classifier = LogisticRegression(C=10.0, max_iter=3000)
        self.labels: list[str] = []

    def _encode(self, texts: Sequence[str]) -> Any:
        return self._encoder.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> EmbeddingIntentClassifier:
        self._classifier.fit(self._encode(texts), list(labels))
        self.labels = [str(label) for label in self._classifier.classes_]
        return self

    def rank_many(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        probabilities = self._classifier.predict_proba(self._encode(texts))
        return [[(self.labels[i], float(row[i])) for i in np.argsort(row)[::-1]] for row in probabilities]

    def rank(self, text: str) -> list[tuple[str, float]]:
        return self.rank_many([text])[0]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"version": FORMAT_VERSION, "model": self.model_name, "classifier": self._classifier, "labels": self.labels}, path)

    @classmethod
    def load(cls, path: Path) -> EmbeddingIntentClassifier:
        data = joblib.load(path)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} was saved by another version of the classifier")
        model = cls(data["model"])
        model._classifier, model.labels = data["classifier"], data["labels"]
        return model
