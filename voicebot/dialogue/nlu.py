"""NLU for a domain: training data from the domain files, training, evaluation, caching on disk."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voicebot.core.registry import Registry

import numpy as np
from sklearn.model_selection import train_test_split

from voicebot.config import NluSettings
from voicebot.dialogue.domain import Domain
from voicebot.pipelines.nlu.base import IntentClassifier
from voicebot.pipelines.nlu.charngram import (
    FORMAT_VERSION,
    TfidfBaseline,
)
from voicebot.pipelines.nlu.entities import Entity, EntityExtractor

log = logging.getLogger(__name__)


@dataclass
class Example:
    text: str
    intent: str
    language: str


@dataclass
class Evaluation:
    """Held-out accuracy per language for our classifier and for the TF-IDF baseline."""

    accuracy: dict[str, float] = field(default_factory=dict)
    calibration_error: float = 0.0  # expected calibration error of the top score, 10 bins
    baseline_accuracy: dict[str, float] = field(default_factory=dict)
    test_size: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    def overall(self, baseline: bool = False) -> float:
        table = self.baseline_accuracy if baseline else self.accuracy
        total = sum(self.test_size.values())
        return sum(table[lang] * n for lang, n in self.test_size.items()) / total if total else 0.0

    def report(self) -> str:
        lines = [f"{'language':<10}{'examples':>10}{'voicebot':>10}{'tf-idf':>10}"]
        for lang in self.accuracy:
            lines.append(f"{lang:<10}{self.test_size[lang]:>10}{self.accuracy[lang]:>10.3f}{self.baseline_accuracy[lang]:>10.3f}")
        lines.append(f"{'all':<10}{sum(self.test_size.values()):>10}{self.overall():>10.3f}{self.overall(True):>10.3f}")
        lines.append(f"expected calibration error of the top score: {self.calibration_error:.3f}")
        return "\n".join(lines)


def domain_examples(domain: Domain, extractor: EntityExtractor) -> list[Example]:
    """Every training example with typed values masked, as the classifier will see live messages."""
    examples = []
    for language, intents in domain.examples.items():
        for intent, texts in intents.items():
            for text in texts:
                masked = extractor.mask(text, extractor.extract(text, language))
                examples.append(Example(masked, intent, language))
    return examples


def fingerprint(domain: Domain, settings: NluSettings | None = None) -> str:
    settings = settings or NluSettings()
    options = json.dumps(settings.backend_options(), sort_keys=True, default=str)
    digest = hashlib.sha256(f"format={FORMAT_VERSION};backend={settings.backend};options={options}".encode())
    digest.update((domain.folder / "domain.yaml").read_bytes())
    for language in sorted(domain.examples):
        digest.update((domain.folder / "nlu" / f"{language}.yaml").read_bytes())
    for proposal in sorted((domain.folder / "proposals").glob("*.yaml")):  # their examples train the model too
        digest.update(proposal.read_bytes())
    return digest.hexdigest()[:16]


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from voicebot.plugins import default_registry

    return default_registry()


def make_classifier(settings: NluSettings | None = None, registry: Registry | None = None) -> IntentClassifier:
    """A new, untrained classifier of the configured backend (``[nlu] backend`` and its options)."""
    settings = settings or NluSettings()
    return _registry(registry).create("nlu", settings.backend, settings.backend_options(), "nlu")


def classifier_class(settings: NluSettings, registry: Registry | None = None) -> type[IntentClassifier]:
    return _registry(registry).resolve("nlu", settings.backend, "nlu.backend")


def train_classifier(examples: list[Example], settings: NluSettings | None = None, registry: Registry | None = None) -> IntentClassifier:
    return make_classifier(settings, registry).fit([e.text for e in examples], [e.intent for e in examples])


def held_out_split(examples: list[Example], test_fraction: float = 0.25, seed: int = 7) -> tuple[list[Example], list[Example]]:
    """Stratified by (language, intent): every backend is compared on the same split. An intent
    with a single example in a language (a drafted proposal: 2 English messages, 1 Spanish) keeps
    it in training: a stratum of one cannot be split, and scikit-learn refuses the whole split."""
    strata = [f"{e.language}/{e.intent}" for e in examples]
    sizes = Counter(strata)
    single = [e for e, stratum in zip(examples, strata, strict=True) if sizes[stratum] < 2]
    rest = [(e, stratum) for e, stratum in zip(examples, strata, strict=True) if sizes[stratum] >= 2]
    train, test = train_test_split([e for e, _ in rest], test_size=test_fraction, random_state=seed, stratify=[s for _, s in rest])
    return list(train) + single, list(test)


def evaluate(examples: list[Example], test_fraction: float = 0.25, seed: int = 7, settings: NluSettings | None = None) -> Evaluation:
    """Stratified hold-out by (language, intent); per-language accuracy against the baseline."""
    train, test = held_out_split(examples, test_fraction, seed)
    return evaluate_trained(train_classifier(train, settings), train, test)


def evaluate_trained(model: IntentClassifier, train: list[Example], test: list[Example]) -> Evaluation:
    """``evaluate`` for a model already trained on ``train``."""
    baseline = TfidfBaseline().fit([e.text for e in train], [e.intent for e in train])
    rankings = model.rank_many([e.text for e in test])
    predicted = [ranking[0][0] for ranking in rankings]
    baseline_predicted = baseline.predict([e.text for e in test])
    result = Evaluation()
    for language in sorted({e.language for e in test}):
        index = [i for i, e in enumerate(test) if e.language == language]
        result.test_size[language] = len(index)
        result.accuracy[language] = sum(predicted[i] == test[i].intent for i in index) / len(index)
        result.baseline_accuracy[language] = sum(baseline_predicted[i] == test[i].intent for i in index) / len(index)
    result.calibration_error = expected_calibration_error(
        [ranking[0][1] for ranking in rankings], [p == e.intent for p, e in zip(predicted, test, strict=True)]
    )
    result.errors = [
        {"language": e.language, "text": e.text, "expected": e.intent, "predicted": p}
        for e, p in zip(test, predicted, strict=True)
        if p != e.intent
    ]
    return result


def model_path(domain: Domain, models_dir: Path, settings: NluSettings | None = None) -> Path:
    return models_dir / f"nlu-{domain.name}-{fingerprint(domain, settings)}.joblib"


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """How far the top score is from the observed accuracy, averaged over confidence bins."""
    conf, hit = np.asarray(confidences), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > low) & (conf <= high)
        if mask.any():
            error += mask.mean() * abs(conf[mask].mean() - hit[mask].mean())
    return float(error)


def load_or_train(domain: Domain, extractor: EntityExtractor, models_dir: Path, settings: NluSettings | None = None,
                  registry: Registry | None = None) -> tuple[IntentClassifier, dict[str, Any]]:
    """Use the model `voicebot train` saved for exactly these domain files and settings, or train one now."""
    settings = settings or NluSettings()
    path = model_path(domain, models_dir, settings)
    if path.is_file():
        try:
            return classifier_class(settings, registry).load(path), {"model_file": str(path), "trained_now": False}
        except Exception as exc:  # a corrupt or foreign file must not stop the bot: retrain
            log.warning("cannot load %s (%s); retraining", path, exc)
    model = train_classifier(domain_examples(domain, extractor), settings, registry)
    try:
        model.save(path)
    except OSError as exc:
        log.warning("cannot save NLU model to %s: %s", path, exc)
    return model, {"model_file": str(path), "trained_now": True}


def understand_entities(extractor: EntityExtractor, text: str, language: str) -> tuple[list[Entity], str]:
    entities = extractor.extract(text, language)
    return entities, extractor.mask(text, entities)
