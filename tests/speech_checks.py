"""What a listener would notice in a transcript, with a margin that holds across CPUs.

Whisper's exact words for synthetic speech are not a property of our code: CTranslate2's int8
kernels round differently from one CPU to another, and on one machine espeak-ng's Spanish "pedido"
came out "peligro" every time (docs: DESIGN.md, "Known pitfalls"). Tests that check recognised
speech therefore compare it with what was said as a word error rate under a bound, check the
numbers a customer reads out digit for digit, and tell sessions apart by which sentence a text is
closest to, rather than matching exact words.

Word error rate is jiwer's (the usual library for it; part of the ``test`` extra).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import jiwer

from voicebot.pipelines.asr.normalise import normalise_spoken_digits

_CONTRACTIONS = {"where's": "where is", "what's": "what is", "it's": "it is", "i'm": "i am", "wo's": "wo ist"}


def normalise(text: str) -> str:
    """Lower-case words without accents or punctuation, numbers read aloud joined ("1-2-3" -> "123").

    Accents and punctuation are not what a listener checks ("¿Dónde...?" and "¡Donde...!" say the
    same), and Whisper writes a number read aloud in several ways that the dialogue joins anyway."""
    text = normalise_spoken_digits(text).lower().replace("\u2019", "'")
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(re.findall(r"[^\W_]+", text))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (both normalised): 0 is perfect, an
    empty or unrelated text is about 1 (more when it inserts words)."""
    return corpus_word_error_rate([reference], [hypothesis])


def corpus_word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Errors over all pairs divided by all reference words (a corpus WER, as benchmarks report)."""
    refs, hyps = [normalise(t).split() for t in references], [normalise(t).split() for t in hypotheses]
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references for {len(hyps)} hypotheses")
    if not all(refs):
        raise ValueError("a reference has no words")
    return sum(_errors(ref, hyp) for ref, hyp in zip(refs, hyps, strict=True)) / sum(len(ref) for ref in refs)


def _errors(ref: list[str], hyp: list[str]) -> int:
    """Substitutions + deletions + insertions turning ``hyp`` into ``ref``."""
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return int(out.substitutions + out.deletions + out.insertions)


def closest(hypothesis: str, references: Sequence[str]) -> int:
    """Index of the reference ``hypothesis`` is nearest to (lowest word error rate)."""
    rates = [word_error_rate(reference, hypothesis) for reference in references]
    return rates.index(min(rates))


def digits(text: str) -> str:
    """The digits of ``text`` in order: an order number read aloud comes out as one run of them."""
    return re.sub(r"\D", "", text)
