"""The contract every intent classifier (``[nlu] backend``) meets.

The dialogue engine trains it from the domain's examples (typed values already masked), saves it
next to the data, loads it again at the next start when the domain files are unchanged, and asks
it for a ranking of intents per message. Scores should be calibrated probabilities: the engine's
out-of-scope threshold (``nlu.oos_threshold``) and clarification margin compare them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class IntentClassifier(Protocol):
    name: str

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> IntentClassifier:
        """Train on masked example texts and their intent names; return self."""
        ...

    def rank(self, text: str) -> list[tuple[str, float]]:
        """Every intent with its probability, best first."""
        ...

    def rank_many(self, texts: Sequence[str]) -> list[list[tuple[str, float]]]:
        """``rank`` for many texts at once (the engine batches messages across sessions)."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> IntentClassifier: ...


def ranked(probabilities: np.ndarray, labels: Sequence[str]) -> list[list[tuple[str, float]]]:
    """Each row of an (n texts x n intents) probability matrix as ``rank`` returns it: every
    intent with its probability, best first."""
    return [[(labels[i], float(row[i])) for i in np.argsort(row)[::-1]] for row in probabilities]
