"""The chat page in headless Chromium when its server dies mid-turn: the message was acknowledged,
its answer never came. After the page reconnects to the restarted server it sends the message
again with the same client_id, and the customer sees exactly one answer to it.

The turn is held in flight for real: the demo's identity check (``verify_order_owner``) is a
webhook to an HTTP service of this test that does not answer the first call until the server that
made it has been SIGKILLed."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_HEADERS, ServerProcess, fresh_data_dir
from tests.test_browser import TIMEOUT_MS, final_bot, say
from voicebot.resources import demo_domain_dir

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

EMAIL = "anna.schmidt@example.com"  # the owner of the demo's order 54321
RECOVERY_MS = 180_000  # a server restart on a loaded machine, and the page's reconnect back-off


@dataclass
class IdentityService:
    """The integrator's identity check: holds its first call until ``release`` is set."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.calls.append(body)
                if len(service.calls) == 1:
                    service.release.wait(300)
                payload = json.dumps({"outcome": "verified" if body["slots"].get("email") == EMAIL else "not_verified"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the server that asked was killed meanwhile

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def identity_service() -> Iterator[tuple[IdentityService, str]]:
    service = IdentityService()
    http = ThreadingHTTPServer(("127.0.0.1", 0), service.handler())
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield service, f"http://127.0.0.1:{http.server_address[1]}/identity"
    service.release.set()
    http.shutdown()
    http.server_close()


def webhook_domain(folder: Path, url: str) -> Path:
    shutil.copytree(demo_domain_dir(), folder)
    text = (folder / "domain.yaml").read_text()
    webhook = 'verify_order_owner: {python: "actions.py:verify_order_owner"}'
    assert webhook in text
    (folder / "domain.yaml").write_text(text.replace(webhook, f'verify_order_owner: {{webhook: "{url}", timeout_s: 120}}'))
    return folder


def test_a_message_in_flight_when_the_server_dies_is_answered_once_after_the_reconnect(
        browser: Any, tmp_path: Path, trained_models: Path, identity_service: tuple[IdentityService, str]) -> None:
    service, url = identity_service
    data_dir = fresh_data_dir(tmp_path / "data", trained_models)
    env = {"VOICEBOT_DOMAIN__PATH": str(webhook_domain(tmp_path / "domain", url))}
    first = ServerProcess(data_dir, extra_env=env).start(timeout=180)
    again = ServerProcess(data_dir, port=first.port, extra_env=env)
    context = browser.new_context(locale="en-US", viewport={"width": 900, "height": 820})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    acks: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: _note_ack(payload, acks)))
    try:
        page.goto(first.url + "/")
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "online")
        say(page, "where is my order 54321?")
        asked = final_bot(page).count()
        page.get_by_test_id("input").fill(EMAIL)
        page.get_by_test_id("input").press("Enter")
        deadline = time.monotonic() + 60
        while not (service.calls and len(acks) >= 2):  # acknowledged, and held at the identity check
            assert time.monotonic() < deadline, f"the turn did not reach the identity check: {service.calls} {acks}"
            page.wait_for_timeout(100)
        first.stop(signal.SIGKILL)  # mid-turn: acknowledged, never answered, never stored
        service.release.set()
        expect(page.get_by_test_id("status")).not_to_have_attribute("data-state", "online")
        assert final_bot(page).count() == asked  # no answer came before the server died
        again.start(timeout=180)
        answer = page.locator(".row.user", has=page.get_by_text(EMAIL, exact=True)).locator(
            "xpath=following-sibling::div[contains(@class, 'bot')]//div[@data-final='true']")
        expect(answer.first).to_contain_text("54321", timeout=RECOVERY_MS)  # answered after the reconnect
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "online")
        page.wait_for_timeout(3000)  # would a second answer come?
        shown = page.eval_on_selector_all('[data-testid="user-message"], [data-testid="bot-message"][data-final="true"]',
                                          "els => els.filter((e) => !e.closest('[hidden]')).map((e) => [e.dataset.testid, e.textContent])")
        users = [text for kind, text in shown if kind == "user-message"]
        assert users.count(EMAIL) == 1, shown  # the message once
        after = shown[[kind == "user-message" and text == EMAIL for kind, text in shown].index(True) + 1:]
        assert len(after) == 1 and after[0][0] == "bot-message" and "54321" in after[0][1], shown  # and one answer to it
        assert len(service.calls) == 2  # the dead server's call and the restarted one's: one turn made again
        session_id = page.locator("#messages").get_attribute("data-session-id")
        stored = httpx.get(f"{again.url}/api/conversations/{session_id}", headers=ADMIN_HEADERS, timeout=30).json()
        assert len(stored["turns"]) == 2, stored["turns"]  # the question and the e-mail, once each
    finally:
        context.close()
        first.stop()
        again.stop()


def _note_ack(payload: str | bytes, acks: list[dict[str, Any]]) -> None:
    try:
        message = json.loads(payload)
    except (TypeError, ValueError):
        return
    if isinstance(message, dict) and message.get("type") == "ack":
        acks.append(message)


def test_an_answer_lost_with_its_connection_is_shown_once_after_the_reconnect(browser: Any, server: ServerProcess) -> None:
    """The other side of a fail-over: the server took the message, answered and stored it, but the
    connection broke before the page saw the ack or the answer. The page sends it again with its
    client_id; the server answers ``repeated``; the resumed history already shows that answer, so
    the customer sees the message and its answer once."""
    context = browser.new_context(locale="en-US", viewport={"width": 900, "height": 820})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    cut = {"armed": False, "done": False}
    repeated: list[dict[str, Any]] = []

    def route(ws: Any) -> None:
        upstream = ws.connect_to_server()

        def from_server(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("repeated"):
                repeated.append(frame)
            if not cut["armed"] or cut["done"]:
                ws.send(payload)
            elif frame["type"] == "message":  # answered and stored: the page saw none of it, and the line breaks
                cut["done"] = True
                ws.close(code=4000, reason="network cut")

        upstream.on_message(from_server)

    page.route_web_socket("**/ws*", route)
    try:
        page.goto(server.url + "/")
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "online")
        say(page, "where is my order 54321?")
        cut["armed"] = True
        page.get_by_test_id("input").fill(EMAIL)
        page.get_by_test_id("input").press("Enter")
        answer = page.locator(".row.user", has=page.get_by_text(EMAIL, exact=True)).locator(
            "xpath=following-sibling::div[contains(@class, 'bot')]//div[@data-final='true']")
        expect(answer.first).to_contain_text("54321", timeout=RECOVERY_MS)  # from the resumed history
        deadline = time.monotonic() + 60
        while not any(frame["type"] == "message" for frame in repeated):  # the retry was answered, marked repeated
            assert cut["done"] and time.monotonic() < deadline, f"no repeated answer: {repeated}"
            page.wait_for_timeout(100)
        page.wait_for_timeout(1000)  # time to render it, were it to be rendered
        shown = page.eval_on_selector_all('[data-testid="user-message"], [data-testid="bot-message"][data-final="true"]',
                                          "els => els.filter((e) => !e.closest('[hidden]')).map((e) => [e.dataset.testid, e.textContent])")
        assert [text for kind, text in shown if kind == "user-message"].count(EMAIL) == 1, shown
        after = shown[[kind == "user-message" and text == EMAIL for kind, text in shown].index(True) + 1:]
        assert len(after) == 1 and "54321" in after[0][1], shown  # one answer, not the history's and the repeated one
    finally:
        context.close()
