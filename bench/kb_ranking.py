"""Knowledge-base ranking figures on the table of tests/test_kb_ranking.py (misheard, paraphrased,
five KB languages, six languages without articles): for each signal alone and for the combined
ranking the policy uses, how many questions get the right article, and the mean and smallest lead
of the right article over the best wrong one (the margin a small change in the encoder or the
articles must not eat).

    .venv/bin/python bench/kb_ranking.py

Signals: written n-grams only (the lexical score without the sound match), lexical (written or
sounded, the better), semantic (encoder cosine only), combined (KnowledgeBase.answer). Figures
only: nothing here passes or fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_kb_ranking import MISHEARD, OTHER_LANGUAGES, PARAPHRASES  # noqa: E402
from voicebot.dialogue import knowledge  # noqa: E402
from voicebot.dialogue.domain import load_domain  # noqa: E402
from voicebot.dialogue.knowledge import Hit, KnowledgeBase  # noqa: E402
from voicebot.pipelines.nlu.encoder import shared_encoder  # noqa: E402
from voicebot.resources import demo_domain_dir  # noqa: E402

GROUPS = {"misheard": MISHEARD, "paraphrases": PARAPHRASES, "other languages": OTHER_LANGUAGES}


def ranked_language(kb: KnowledgeBase, chain: list[str], question: str) -> str:
    return next(language for language in chain if kb.search(question, language))


def lead(hits: list[Hit], expected: str, value: str) -> float:
    """The right article's score minus the best wrong one's (negative: a wrong one wins)."""
    scores = {hit.article.id: getattr(hit, value) or 0.0 for hit in hits}
    return scores[expected] - max(score for article, score in scores.items() if article != expected)


def figures(kb: KnowledgeBase, vectors: dict[str, np.ndarray], rows: list[tuple[str, str, str]], value: str) -> tuple[int, float, float]:
    leads = []
    for chain, question, expected in rows:
        hits = kb.search(question, ranked_language(kb, chain.split(","), question), top_k=99, query_vector=vectors[question])
        leads.append(lead(hits, expected, value))
    return sum(x > 0 for x in leads), float(np.mean(leads)), float(np.min(leads))


def main() -> None:
    domain, problems = load_domain(demo_domain_dir())
    assert domain is not None, problems
    encoder = shared_encoder()
    rows = [row for group in GROUPS.values() for row in group]
    vectors = dict(zip([q for _, q, _ in rows], encoder.encode([q for _, q, _ in rows]), strict=True))
    print(f"{len(rows)} questions; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"{'':<28}" + "".join(f"{name:>32}" for name in GROUPS))
    kb = KnowledgeBase(domain, embed=encoder.encode)
    written_only = KnowledgeBase(domain, embed=encoder.encode)
    for index in written_only._indexes.values():
        index.sound = None  # the lexical score as it was before the sound match
    for label, base, value in (("written n-grams only", written_only, "lexical"), ("lexical (written or sound)", kb, "lexical"),
                               ("semantic only", kb, "semantic"), ("combined, before sound", written_only, "score"),
                               ("combined (served)", kb, "score")):
        cells = []
        for group in GROUPS.values():
            right, mean, smallest = figures(base, vectors, group, value)
            cells.append(f"{right}/{len(group)} mean {mean:+.2f} min {smallest:+.2f}")
        print(f"{label:<28}" + "".join(f"{cell:>32}" for cell in cells))
    print(f"(semantic weight {knowledge.SEMANTIC_WEIGHT}, floor {knowledge.SEMANTIC_FLOOR}; lead = right article's score - best wrong one's)")


if __name__ == "__main__":
    main()
