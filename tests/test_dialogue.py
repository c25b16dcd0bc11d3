"""The dialogue engine with real components: webhook actions on a local HTTP server, failing
actions, clarification, and the locale fallback chain."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from voicebot.config import LanguageSettings, NluSettings
from voicebot.core.session import DialogueState
from voicebot.dialogue.engine import DialogueEngine
from voicebot.dialogue.locales import Locales
from voicebot.dialogue.tracker import Understood
from voicebot.resources import demo_domain_dir


class _OrderService(BaseHTTPRequestHandler):
    calls: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _OrderService.calls.append(body)
        if body["action"] == "lookup_order" and body["slots"]["order_id"] == "99999":
            self.send_response(500)
            self.end_headers()
            return
        if body["action"] == "verify_order_owner":
            reply = {"outcome": "verified" if body["slots"].get("email") == "customer@example.com" else "not_verified"}
        else:
            reply = {"outcome": "found", "order_id": body["slots"]["order_id"], "item": "Webhook Phone", "status": "shipped", "eta": "2027-01-02"}
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def order_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OrderService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/orders"
    server.shutdown()
    server.server_close()


async def converse(engine: DialogueEngine, state: DialogueState, text: str) -> tuple[str, dict[str, Any]]:
    language = engine.identify_language(text, state)
    decision, trace = await engine.respond(state, engine.understand(text, language.language), language, "test-session")
    return decision.text, trace


async def test_webhook_action_answers_from_the_integrators_service(tmp_path: Path, order_service: str) -> None:
    domain = tmp_path / "domain"
    shutil.copytree(demo_domain_dir(), domain)
    text = (domain / "domain.yaml").read_text()
    for action in ("lookup_order", "verify_order_owner"):  # the identity check can be a webhook too
        text = text.replace(f'{action}: {{python: "actions.py:{action}"}}', f'{action}: {{webhook: "{order_service}", timeout_s: 3}}')
    (domain / "domain.yaml").write_text(text)
    engine = DialogueEngine.from_folder(domain, NluSettings(), LanguageSettings(), tmp_path / "data")
    state = engine.new_state("en")
    asked, trace = await converse(engine, state, "where is my order 13579?")
    assert "Webhook Phone" not in asked and trace["identification"]["result"] == "ask"
    reply, trace = await converse(engine, state, "customer@example.com")
    assert "Webhook Phone" in reply and "2027-01-02" in reply and trace["action"]["outcome"] == "found"
    # The check gets the order id and the contact; the lookup only the order id.
    assert _OrderService.calls[-2] == {"action": "verify_order_owner", "slots": {"order_id": "13579", "email": "customer@example.com"},
                                       "language": "en", "session_id": "test-session"}
    assert _OrderService.calls[-1] == {"action": "lookup_order", "slots": {"order_id": "13579"}, "language": "en", "session_id": "test-session"}
    # The service fails: a polite answer in the user's language, and the conversation goes on.
    await converse(engine, state, "and order 99999?")
    failed, trace = await converse(engine, state, "customer@example.com")
    assert trace["response"]["path"] == "error" and "500" in trace["action"]["error"]
    assert "something went wrong" in failed.lower()
    after, _ = await converse(engine, state, "what is your refund policy?")
    assert "5 business days" in after
    await engine.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DialogueEngine:
    return DialogueEngine.from_folder(demo_domain_dir(), NluSettings(), LanguageSettings(), tmp_path_factory.mktemp("data"))


async def test_two_close_intents_get_a_clarifying_question(engine: DialogueEngine) -> None:
    state = engine.new_state("de")
    message = Understood("Bestellung Problem", "order_status", 0.41, [("order_status", 0.41), ("cancel_order", 0.38), ("greet", 0.1)], [], False)
    language = engine.identify_language(message.text, state)
    decision, trace = await engine.respond(state, message, language, "s")
    assert decision.path == "clarify" and decision.language == "de"
    names = engine.locales.get("de").messages["intent_names"]  # type: ignore[union-attr]
    assert names["order_status"] in decision.text and names["cancel_order"] in decision.text


async def test_replies_fall_back_along_the_locale_chain(engine: DialogueEngine) -> None:
    locales = Locales()
    assert locales.chain("zh-tw") == ["zh-tw", "zh", "en"] and locales.chain("pt") == ["pt", "en"]
    text, language = locales.message("handoff", "zh-tw")
    assert language == "zh-tw" and text != locales.message("handoff", "zh")[0]
    # The demo domain has no zh-tw responses: zh-tw sessions get the zh template.
    rendered = engine.policy.templates.render("ask_order_id", "zh-tw", {})
    assert rendered is not None and rendered[1] == "zh" and "12345" in rendered[0]


async def test_cancelling_an_unknown_order_asks_again_instead_of_confirming(engine: DialogueEngine) -> None:
    state = engine.new_state("en")
    reply, trace = await converse(engine, state, "please cancel my order 10101")
    assert trace["identification"]["result"] == "ask" and state.awaiting_confirmation is None
    # An unknown order fails identification like someone else's order: no confirmation, no lookup.
    reply, trace = await converse(engine, state, "it's john.smith@example.com")
    assert trace["identification"]["result"] == "refused" and trace["action"] is None
    assert state.identifying == "cancel_order" and state.awaiting_confirmation is None
    reply, trace = await converse(engine, state, "sorry, it is 67890")
    assert "67890" in reply and trace["identification"]["result"] == "ask"
    reply, trace = await converse(engine, state, "john.smith@example.com")
    assert "67890" in reply and "Galaxy S25" in reply and state.awaiting_confirmation == "cancel_order"


def test_saved_state_is_a_full_independent_copy() -> None:
    """What is saved after a turn holds every field of the state (nothing left out when the
    state grows a field) and shares nothing with the live state, which the next turn changes."""
    import dataclasses

    from voicebot.core.session import HistoryEntry, SlotValue

    state = DialogueState(language="de", active_flow="order_status", turn_count=3, identity={"customer_id": "c1"},
                          slots={"order_id": SlotValue("12345", 0.95, 2, "12345")}, verified={"order": ["12345"]},
                          history=[HistoryEntry("wo ist meine Bestellung?", "Welche Nummer?", "order_status", "de")])
    saved = state.to_dict()
    assert saved == dataclasses.asdict(state)
    assert DialogueState.from_dict(json.loads(json.dumps(saved))) == state
    saved["slots"]["order_id"]["value"] = "99999"
    saved["history"][0]["user"] = "changed"
    saved["verified"]["order"].append("99999")
    saved["identity"]["customer_id"] = "c2"
    assert state.slots["order_id"].value == "12345" and state.history[0].user == "wo ist meine Bestellung?"
    assert state.verified == {"order": ["12345"]} and state.identity == {"customer_id": "c1"}
