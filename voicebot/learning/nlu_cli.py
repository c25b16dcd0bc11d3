"""``voicebot test-nlu DOMAIN FILE [--json]``: the domain's trained NLU (the model ``voicebot
train`` saved, or one trained now) scored on a labelled file (voicebot/learning/nlu_report.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from voicebot.config import Settings
from voicebot.dialogue.domain import load_domain
from voicebot.dialogue.locales import Locales
from voicebot.dialogue.nlu import load_or_train
from voicebot.learning.nlu_report import LabelledFileError, evaluate_file, read_test_file, threshold_of
from voicebot.pipelines.nlu.entities import EntityExtractor


def run_test_nlu(settings: Settings, domain_folder: Path, file: Path, as_json: bool) -> int:
    try:
        items = read_test_file(file)
    except LabelledFileError as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 2
    domain, _ = load_domain(domain_folder)
    assert domain is not None
    classifier, info = load_or_train(domain, EntityExtractor(domain.spec), settings.storage.data_dir / "models", settings.nlu)
    languages = list(dict.fromkeys([*domain.languages, *Locales().codes()]))
    report = evaluate_file(domain, classifier, items, threshold_of(classifier, settings.nlu.oos_threshold), languages)
    if as_json:
        print(json.dumps({**report.to_dict(), "domain": domain.name, "file": str(file), "model_file": info["model_file"]},
                         ensure_ascii=False, indent=2))
    else:
        print(report.text())
    return 0
