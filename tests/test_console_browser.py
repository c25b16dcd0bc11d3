"""The agent console and the chat page in real headless Chromium, two browser contexts: a customer
hands off, an agent takes the conversation in /console, they write to each other both ways while
the bot stays silent, a second agent cannot take it, and after the hand-back the bot answers again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, fresh_data_dir
from tests.test_agents import ALICE_KEY, API_KEYS, BOB_KEY, HANDOFF
from tests.test_browser import ARTIFACTS, TIMEOUT_MS, final_bot, open_chat

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api")
Browser = playwright_sync.Browser
Page = playwright_sync.Page
expect = playwright_sync.expect
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("console-server"), trained_models)
    proc = ServerProcess(data_dir, extra_env={"VOICEBOT_AUTH__API_KEYS": json.dumps(API_KEYS)}).start()
    yield proc
    proc.stop()


def open_console(browser: Browser, url: str, key: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url + "/console")
    page.get_by_test_id("credential").fill(key)
    page.get_by_test_id("signin-button").click()
    expect(page.get_by_test_id("console-state")).to_have_attribute("data-state", "online")
    return page


def test_customer_and_agent_talk_while_the_bot_is_silent(browser: Browser, console_server: ServerProcess) -> None:
    url = console_server.url
    alice = open_console(browser, url, ALICE_KEY)
    customer = open_chat(browser, url)
    bob = None
    try:
        answers = final_bot(customer)
        before = answers.count()
        customer.get_by_test_id("input").fill(HANDOFF)
        customer.get_by_test_id("input").press("Enter")
        expect(answers).to_have_count(before + 1)
        expect(answers.last).to_contain_text("Someone will reply shortly")
        conversation_id = customer.get_by_test_id("messages").get_attribute("data-session-id")

        item = alice.locator(f'[data-testid="queue-item"][data-conversation="{conversation_id}"]')
        expect(item).to_be_visible()
        expect(item.get_by_test_id("reason")).to_have_text("asked for a person")
        expect(item.get_by_test_id("waiting")).to_have_text(re.compile(r"^\d+(s|m \d+s)$"))
        item.click()
        expect(alice.get_by_test_id("transcript")).to_contain_text(HANDOFF)
        alice.get_by_test_id("take").click()
        expect(item).to_have_attribute("data-holder", "alice")
        expect(customer.get_by_test_id("agent-notice").last).to_contain_text("alice (agent) joined")

        # The customer writes: the agent reads it; the bot does not answer.
        bot_answers = answers.count()
        customer.get_by_test_id("input").fill("Is anyone there?")
        customer.get_by_test_id("input").press("Enter")
        expect(customer.get_by_test_id("forwarded").last).to_be_visible()
        expect(alice.get_by_test_id("customer-line").last).to_have_text(re.compile("Is anyone there"))

        alice.get_by_test_id("reply").fill("Yes, Alice here. Let me look at your order.")
        alice.get_by_test_id("reply").press("Enter")
        expect(customer.get_by_test_id("agent-message").last).to_have_text("Yes, Alice here. Let me look at your order.")
        expect(answers).to_have_count(bot_answers)  # still no bot answer since the agent took over

        # A second agent sees who holds it and cannot take it.
        bob = open_console(browser, url, BOB_KEY)
        held = bob.locator(f'[data-testid="queue-item"][data-conversation="{conversation_id}"]')
        expect(held).to_have_attribute("data-holder", "alice")
        held.click()
        expect(bob.get_by_test_id("take")).to_be_disabled()
        expect(bob.get_by_test_id("send")).to_be_disabled()
        refused = httpx.post(f"{url}/api/agents/conversations/{conversation_id}/take", headers={"Authorization": f"Bearer {BOB_KEY}"})
        assert refused.status_code == 409 and "alice" in refused.json()["detail"]

        ARTIFACTS.mkdir(exist_ok=True)
        alice.screenshot(path=str(ARTIFACTS / "console-agent.png"), full_page=True)
        customer.screenshot(path=str(ARTIFACTS / "console-customer-chat.png"), full_page=True)

        # Back to the bot: it answers the next message again.
        alice.get_by_test_id("handback").click()
        expect(customer.get_by_test_id("agent-notice").last).to_contain_text("virtual assistant")
        expect(item).to_have_count(0)
        customer.get_by_test_id("input").fill("where is my order?")
        customer.get_by_test_id("input").press("Enter")
        expect(answers).to_have_count(bot_answers + 1)
        expect(answers.last).to_contain_text(re.compile("order number", re.I))
    finally:
        for page in (alice, customer, bob):
            if page is not None:
                page.context.close()
