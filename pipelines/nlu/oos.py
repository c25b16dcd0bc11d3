"""Each intent classifier's own out-of-scope decision, fitted on its held-out scores.

One shared threshold (0.35) meant different things for different backends: the encoder mixture
spreads probability over near intents of 150, so on CLINC150 it flagged only a third of the
out-of-scope questions, the n-gram model half. Every backend already scores held-out folds to fit
its temperature; the same scores pick the threshold that balances the two mistakes a user
notices: an in-scope question refused, and an out-of-scope one answered as something else
(weighted by how often each comes, see OOS_SHARE).

Out-of-scope examples come from the domain's ``out_of_scope`` intent (a class like any other: a
message ranked there is out of scope whatever its score). A domain without them still gets a
threshold: held-out messages the model got wrong stand in for out-of-scope ones (a wrong answer is
what a too-low threshold lets through), and the threshold is kept in a sane band.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUT_OF_SCOPE = "out_of_scope"
DEFAULT_THRESHOLD = 0.35
BAND = (0.15, 0.7)
# Weighing both mistakes equally (the mean of in-scope accuracy and out-of-scope recall) made the
# n-gram model refuse a third of the demo's in-scope messages to catch its few out-of-scope ones;
# a customer-service bot sees far more in-scope messages. One in four out of scope is already a
# pessimistic mix; a held-out set with more of them weighs them as they come.
OOS_SHARE = 0.25  # a threshold fitted on a few dozen held-out errors is kept within this


def fit_threshold(probabilities: np.ndarray, truth: np.ndarray, labels: Sequence[str], oos_share: float = OOS_SHARE) -> float:
    """The threshold on the top probability that maximises the share of messages handled right
    (in-scope accepted with the right intent, out of scope refused) on held-out rows (``truth``
    holds column indexes into ``labels``), out-of-scope messages weighted as ``oos_share`` of the
    traffic, or their held-out share when it is larger."""
    if len(truth) == 0:
        return DEFAULT_THRESHOLD
    top = probabilities.argmax(axis=1)
    top_score = probabilities[np.arange(len(truth)), top]
    oos_column = list(labels).index(OUT_OF_SCOPE) if OUT_OF_SCOPE in labels else -1
    is_oos = truth == oos_column
    ranked_oos = top == oos_column
    if is_oos.sum() >= 3:
        positives, negatives = ~is_oos, is_oos
        right = top == truth
    else:  # no out-of-scope examples: the model's own held-out mistakes stand in for them
        right = top == truth
        positives, negatives = right, ~right
        if negatives.sum() < 3:
            return DEFAULT_THRESHOLD
    share = max(oos_share, float(negatives.mean()))
    best, best_value = DEFAULT_THRESHOLD, -1.0
    low, high = BAND
    scores = np.unique(np.clip(top_score, low, high))
    # Midway between neighbouring held-out scores: the boundary generalises better than one
    # placed right at a held-out message.
    for threshold in np.unique(np.concatenate([[low, high], (scores[1:] + scores[:-1]) / 2])):
        accepted = right & ~ranked_oos & (top_score >= threshold)
        refused = ranked_oos | (top_score < threshold)
        value = (1 - share) * accepted[positives].mean() + share * refused[negatives].mean()
        if value > best_value + 1e-9:
            best, best_value = float(threshold), value
    return round(best, 4)


def is_out_of_scope(intent: str, confidence: float, threshold: float) -> bool:
    return intent == OUT_OF_SCOPE or confidence < threshold
