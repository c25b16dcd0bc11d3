"""How well a domain's NLU understands a labelled test set: ``voicebot test-nlu`` and the report
``voicebot train`` prints on its held-out split (what ``rasa test nlu`` is used for).

Accuracy per language and per intent, the pairs of intents most often confused, and the
out-of-scope decision as the engine takes it (an ``out_of_scope`` ranking, or a top score under
the threshold), scored as precision and recall of "out of scope" against the file's
``out_of_scope`` labels. Texts are masked like live messages (typed values replaced by their slot
name) before they reach the classifier.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sklearn.metrics import precision_recall_fscore_support

from voicebot.config import NluSettings
from voicebot.dialogue.domain import Domain
from voicebot.dialogue.nlu import Evaluation, Example, evaluate_trained, held_out_split, train_classifier
from voicebot.pipelines.lid.text import TextLanguageDetector
from voicebot.pipelines.nlu.base import IntentClassifier
from voicebot.pipelines.nlu.entities import EntityExtractor
from voicebot.pipelines.nlu.oos import OUT_OF_SCOPE, is_out_of_scope

OOS_ALIASES = {"oos", "out-of-scope", "outofscope", OUT_OF_SCOPE}


class LabelledFileError(ValueError):
    """A test file the report cannot read, phrased for the user."""


@dataclass
class LabelledText:
    text: str
    intent: str
    language: str | None = None


def _label(intent: str) -> str:
    return OUT_OF_SCOPE if intent.strip().lower() in OOS_ALIASES else intent.strip()


def read_test_file(path: Path) -> list[LabelledText]:
    """CSV with columns ``text,intent`` (and optionally ``language``), or YAML: a list of
    ``{text, intent, language}``, ``{examples: [...]}``, or a domain NLU file
    (``language`` + ``intents: {name: [texts]}``)."""
    if not path.is_file():
        raise LabelledFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        items = _read_csv(path)
    elif suffix in (".yaml", ".yml"):
        items = _read_yaml(path)
    else:
        raise LabelledFileError(f"{path}: expected a .csv or .yaml file")
    if not items:
        raise LabelledFileError(f"{path}: no labelled texts")
    return items


def _read_csv(path: Path) -> list[LabelledText]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower() for name in reader.fieldnames or []}
        if not {"text", "intent"} <= columns:
            raise LabelledFileError(f"{path}: needs the columns text,intent (and optionally language); found {', '.join(sorted(columns)) or 'none'}")
        items = []
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get("text") or not row.get("intent"):
                raise LabelledFileError(f"{path}:{line}: text and intent must not be empty")
            items.append(LabelledText(row["text"], _label(row["intent"]), row.get("language") or None))
    return items


def _read_yaml(path: Path) -> list[LabelledText]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LabelledFileError(f"{path}: not valid YAML ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("intents"), dict):  # a domain NLU file
        language = data.get("language")
        return [LabelledText(str(text), _label(str(intent)), language) for intent, texts in data["intents"].items() for text in texts or []]
    rows = data.get("examples") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise LabelledFileError(f"{path}: expected a list of {{text, intent, language}} (or examples: [...], or a domain NLU file)")
    items = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("text") or not row.get("intent"):
            raise LabelledFileError(f"{path}: item {index + 1} needs text and intent")
        items.append(LabelledText(str(row["text"]), _label(str(row["intent"])), row.get("language")))
    return items


@dataclass
class NluReport:
    model: str
    threshold: float
    examples: int
    accuracy: float
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    confused: list[dict[str, Any]] = field(default_factory=list)
    out_of_scope: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"{self.model}: {self.examples} messages, accuracy {self.accuracy:.3f} (out-of-scope threshold {self.threshold:.3f})",
                 f"{'language':<12}{'messages':>10}{'accuracy':>10}"]
        lines += [f"{lang:<12}{row['n']:>10}{row['accuracy']:>10.3f}" for lang, row in self.per_language.items()]
        lines.append(f"{'intent':<22}{'n':>6}{'precision':>11}{'recall':>9}{'f1':>7}")
        lines += [f"{name:<22}{row['n']:>6}{row['precision']:>11.3f}{row['recall']:>9.3f}{row['f1']:>7.3f}" for name, row in self.per_intent.items()]
        if self.confused:
            lines.append("most confused (expected -> predicted: count):")
            lines += [f"  {c['expected']} -> {c['predicted']}: {c['count']}" for c in self.confused]
        oos = self.out_of_scope
        lines.append(f"out of scope: {oos['n']} labelled, precision {oos['precision']:.3f}, recall {oos['recall']:.3f}")
        return "\n".join(lines)


def predict(classifier: IntentClassifier, texts: Sequence[str], threshold: float) -> list[str]:
    """The engine's reading of each (masked) text: an intent, or out_of_scope."""
    predicted = []
    for ranking in classifier.rank_many(list(texts)):
        intent, confidence = ranking[0]
        predicted.append(OUT_OF_SCOPE if is_out_of_scope(intent, confidence, threshold) else intent)
    return predicted


def score(model: str, truth: Sequence[str], predicted: Sequence[str], languages: Sequence[str], threshold: float,
          most_confused: int = 10) -> NluReport:
    """Figures from the true and predicted labels (out_of_scope included) of each message."""
    n = len(truth)
    right = [t == p for t, p in zip(truth, predicted, strict=True)]
    report = NluReport(model, round(threshold, 4), n, round(sum(right) / n, 4) if n else 0.0)
    for language in sorted(set(languages)):
        index = [i for i, lang in enumerate(languages) if lang == language]
        report.per_language[language] = {"n": len(index), "accuracy": round(sum(right[i] for i in index) / len(index), 4)}
    intents = sorted(set(truth))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=intents, zero_division=0)
    report.per_intent = {name: {"n": int(s), "precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4)}
                         for name, p, r, f, s in zip(intents, precision, recall, f1, support, strict=True)}
    pairs = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    report.confused = [{"expected": t, "predicted": p, "count": c} for (t, p), c in pairs.most_common(most_confused)]
    is_oos = [t == OUT_OF_SCOPE for t in truth]
    flagged = [p == OUT_OF_SCOPE for p in predicted]
    hits = sum(a and b for a, b in zip(is_oos, flagged, strict=True))
    report.out_of_scope = {"n": sum(is_oos), "flagged": sum(flagged),
                           "precision": round(hits / sum(flagged), 4) if any(flagged) else 0.0,
                           "recall": round(hits / sum(is_oos), 4) if any(is_oos) else 0.0}
    return report


def threshold_of(classifier: IntentClassifier, configured: float | None) -> float:
    """The engine's threshold: the operator's, else the backend's fitted one."""
    from voicebot.pipelines.nlu.oos import DEFAULT_THRESHOLD

    return configured if configured is not None else float(getattr(classifier, "oos_threshold", DEFAULT_THRESHOLD))


def evaluate_file(domain: Domain, classifier: IntentClassifier, items: Sequence[LabelledText], threshold: float,
                languages: Sequence[str]) -> NluReport:
    """Score a test file's messages; a message without a language is given the one the text
    language ID picks among ``languages``."""
    extractor = EntityExtractor(domain.spec)
    detector = TextLanguageDetector(languages)
    tagged = [item.language or detector.best(detector.scores(item.text)["combined"])[0] or domain.spec.default_language for item in items]
    masked = [extractor.mask(item.text, extractor.extract(item.text, language)) for item, language in zip(items, tagged, strict=True)]
    return score(getattr(classifier, "name", type(classifier).__name__), [item.intent for item in items],
                 predict(classifier, masked, threshold), tagged, threshold)


def compare_held_out(examples: list[Example], settings: NluSettings) -> tuple[Evaluation, list[NluReport]]:
    """``voicebot train``'s held-out figures: the configured backend and, beside it, the n-gram
    model alone, trained and scored on the same split (the examples are masked already)."""
    train, test = held_out_split(examples)
    model = train_classifier(train, settings)
    evaluation = evaluate_trained(model, train, test)
    models: list[tuple[str, IntentClassifier, float | None]] = [(settings.backend, model, settings.oos_threshold)]
    if settings.backend != "charngram":
        ngram_settings = NluSettings(backend="charngram", oos_threshold=settings.oos_threshold)
        models.append(("charngram", train_classifier(train, ngram_settings), settings.oos_threshold))
    reports = []
    for label, classifier, configured in models:
        threshold = threshold_of(classifier, configured)
        reports.append(score(label, [e.intent for e in test], predict(classifier, [e.text for e in test], threshold),
                             [e.language for e in test], threshold))
    return evaluation, reports


def side_by_side(reports: Sequence[NluReport]) -> str:
    """Per-language accuracy and out-of-scope figures of several models in one table."""
    names = [r.model for r in reports]
    lines = [f"{'':<22}" + "".join(f"{name:>14}" for name in names)]
    for language in reports[0].per_language:
        lines.append(f"{'accuracy ' + language:<22}" + "".join(f"{r.per_language.get(language, {}).get('accuracy', 0.0):>14.3f}" for r in reports))
    lines.append(f"{'accuracy all':<22}" + "".join(f"{r.accuracy:>14.3f}" for r in reports))
    lines.append(f"{'oos threshold':<22}" + "".join(f"{r.threshold:>14.3f}" for r in reports))
    lines.append(f"{'oos precision':<22}" + "".join(f"{r.out_of_scope['precision']:>14.3f}" for r in reports))
    lines.append(f"{'oos recall':<22}" + "".join(f"{r.out_of_scope['recall']:>14.3f}" for r in reports))
    for report in reports:
        if report.confused:
            lines.append(f"most confused ({report.model}): " + ", ".join(f"{c['expected']}->{c['predicted']} {c['count']}" for c in report.confused[:5]))
    return "\n".join(lines)
