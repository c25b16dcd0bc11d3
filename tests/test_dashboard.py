"""The operator dashboard on a real two-tenant server after real websocket conversations:
``GET /api/analytics`` counts what was said (turns by language, hand-offs by reason,
containment, ratings), and ``/dashboard`` in headless Chromium draws it: every chart has the
data, the tenant and period filters change them, a topic the bot could not answer is listed and
drafted into an intent from the page. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_KEY, ADMIN_KEYS_ENV, ChatClient, ServerProcess, fresh_data_dir, session_token
from voicebot.resources import demo_domain_dir

READER_KEY = "transcripts-only-key-0123456789ab"
KEYS = json.dumps([*json.loads(ADMIN_KEYS_ENV), {"name": "reader", "key": READER_KEY, "tenant": "*", "scopes": ["transcripts:read"]}])
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 30_000

# (tenant, language, messages, conversation stars or None, thumbs up for the first answer)
CONVERSATIONS = [
    ("shop", "en", ["where is my order?", "12345"], 5, True),
    ("shop", "de", ["Ich möchte bitte mit einem echten Mitarbeiter sprechen"], 2, False),
    ("shop", "en", ["what payment methods do you accept?"], None, False),
    ("telco", "es", ["no puedo iniciar sesión en mi cuenta"], 4, False),
    ("telco", "es", ["¿va a llover mañana en Madrid?"], None, False),
    ("telco", "es", ["¿qué tiempo hará el domingo en Madrid, va a llover?"], None, False),
]


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("dashboard")
    domains = {}
    for tenant in ("shop", "telco"):  # copies: the page drafts proposals into the served folder
        domains[tenant] = base / f"domain-{tenant}"
        shutil.copytree(demo_domain_dir(), domains[tenant])
    data_dir = fresh_data_dir(base / "data", trained_models)
    shutil.copytree(trained_models, data_dir / "tenants" / "telco" / "models")  # the same domain: no second training
    env = {"VOICEBOT_TENANTS": json.dumps({t: {"domain": str(folder)} for t, folder in domains.items()}),
           "VOICEBOT_AUTH__API_KEYS": KEYS}
    proc = ServerProcess(data_dir, extra_env=env).start(timeout=180)
    yield proc
    proc.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def conversations(dashboard_server: ServerProcess) -> list[dict[str, Any]]:
    """The known conversations; each reply with its tenant."""
    made: list[dict[str, Any]] = []
    for tenant, language, messages, stars, thumbs_up in CONVERSATIONS:
        token = await session_token(dashboard_server.ws_url, tenant=tenant)
        chat = await ChatClient.open(dashboard_server.ws_url, access_token=token, language=language)
        try:
            replies = [await chat.say(text) for text in messages]
            if thumbs_up:
                await chat.send({"type": "feedback", "turn_id": replies[0]["turn_id"], "rating": 1})
                await chat.expect("feedback_saved")
            if stars is not None:
                await chat.send({"type": "feedback", "rating": stars})
                await chat.expect("feedback_saved")
            made += [{**reply, "tenant": tenant} for reply in replies]
        finally:
            await chat.close()
    return made


def analytics(server: ServerProcess, key: str = ADMIN_KEY, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/api/analytics", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.mark.asyncio(loop_scope="module")
async def test_analytics_count_the_conversations(dashboard_server: ServerProcess, conversations: list[dict[str, Any]]) -> None:
    found = analytics(dashboard_server).json()
    assert found["tenants"] == ["shop", "telco"]
    assert sum(found["turns"]) == len(conversations) and sum(found["sessions"]) == len(CONVERSATIONS)
    assert found["languages"] == dict(Counter(r["language"] for r in conversations))
    assert found["intents"] == dict(Counter(r["trace"]["intent"]["name"] for r in conversations))
    assert found["handoffs"] == {"asked": 1}
    assert found["containment"] == {"conversations": len(CONVERSATIONS), "handed_off": 1, "contained": len(CONVERSATIONS) - 1,
                                    "rate": round((len(CONVERSATIONS) - 1) / len(CONVERSATIONS), 4)}
    assert found["satisfaction"] == {"ratings": {"2": 1, "4": 1, "5": 1}, "mean_rating": round(11 / 3, 3), "thumbs_up": 1, "thumbs_down": 0}
    assert any(v is not None for v in found["sentiment"])
    assert {"nlu", "dialogue", "turn"} <= set(found["latency"])
    assert max(v for v in found["latency"]["turn"]["p95"] if v is not None) > 0

    telco = analytics(dashboard_server, tenant="telco").json()
    assert telco["languages"] == {"es": sum(r["tenant"] == "telco" for r in conversations)}
    assert telco["handoffs"] == {} and telco["satisfaction"]["ratings"] == {"4": 1}
    past = analytics(dashboard_server, **{"from": time.time() - 30 * 86400, "to": time.time() - 20 * 86400}).json()
    assert sum(past["turns"]) == 0 and past["containment"]["rate"] is None


def test_analytics_refuse_what_makes_no_sense(dashboard_server: ServerProcess) -> None:
    assert httpx.get(f"{dashboard_server.url}/api/analytics", timeout=10).status_code == 401
    assert analytics(dashboard_server, key=READER_KEY).status_code == 403  # no analytics:read
    assert analytics(dashboard_server, **{"from": 200, "to": 100}).status_code == 422
    assert analytics(dashboard_server, **{"from": 0, "to": 300 * 86400, "bucket": 60}).status_code == 422  # too many points
    assert analytics(dashboard_server, tenant="nobody").status_code == 404


# -- the page in headless Chromium ----------------------------------------------------------------
def chart(page: Any, name: str) -> dict[str, Any]:
    """What the chart on the canvas holds (Chart.js's own data), and whether it drew anything."""
    return page.evaluate("""(id) => {
        const canvas = document.getElementById(id), instance = Chart.getChart(canvas);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0; for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
        return {labels: instance.data.labels, datasets: instance.data.datasets.map(d => ({label: d.label, data: d.data})), inked};
    }""", f"chart-{name}")


def total(found: dict[str, Any], dataset: int = 0) -> float:
    return sum(v for v in found["datasets"][dataset]["data"] if isinstance(v, int | float))


def wait_loaded(page: Any, after: str) -> str:
    page.wait_for_function("(before) => document.body.dataset.loaded && document.body.dataset.loaded !== before", arg=after)
    return str(page.evaluate("document.body.dataset.loaded"))


@pytest.mark.browser
def test_dashboard_draws_the_conversations_and_filters_change_it(browser: Any, dashboard_server: ServerProcess,
                                                                  conversations: list[dict[str, Any]]) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{dashboard_server.url}/dashboard")
        page.get_by_test_id("key").fill("not-the-right-key-0123456789")
        page.get_by_test_id("sign-in-button").click()
        expect(page.get_by_test_id("sign-in-error")).to_contain_text("not accepted")
        assert page.evaluate("sessionStorage.getItem('voicebot.dashboard.key')") is None

        page.get_by_test_id("key").fill(ADMIN_KEY)
        page.get_by_test_id("sign-in-button").click()
        loaded = wait_loaded(page, "")
        expect(page.get_by_test_id("sum-turns")).to_have_text(str(len(conversations)))
        volume = chart(page, "volume")
        assert total(volume, 1) == len(conversations) and total(volume, 0) == len(CONVERSATIONS) and volume["inked"] > 0
        languages = chart(page, "languages")
        assert dict(zip(languages["labels"], languages["datasets"][0]["data"], strict=True)) == dict(Counter(r["language"] for r in conversations))
        assert chart(page, "handoffs")["labels"] == ["asked"]
        assert chart(page, "containment")["datasets"][0]["data"] == [len(CONVERSATIONS) - 1, 1]
        assert total(chart(page, "satisfaction")) == 3 + 1  # three conversations rated, one thumbs up
        assert total(chart(page, "intents")) == len(conversations)
        latency = chart(page, "latency")
        assert {"nlu", "dialogue", "turn"} <= {d["label"] for d in latency["datasets"]} and total(latency) > 0
        assert any(v is not None for v in chart(page, "sentiment")["datasets"][0]["data"])
        for name in ("volume", "latency", "languages", "intents", "containment", "handoffs", "satisfaction", "sentiment"):
            assert chart(page, name)["inked"] > 0, f"the {name} chart drew nothing"
        topics = page.get_by_test_id("topic")
        expect(topics).to_have_count(1)  # the two questions about the weather in Madrid
        expect(topics.first).to_contain_text("¿va a llover mañana en Madrid?")
        page.screenshot(path=str(ARTIFACTS / "dashboard-all-tenants.png"), full_page=True)

        page.get_by_test_id("tenant").select_option("telco")
        loaded = wait_loaded(page, loaded)
        telco = [r for r in conversations if r["tenant"] == "telco"]
        expect(page.get_by_test_id("sum-turns")).to_have_text(str(len(telco)))
        assert chart(page, "languages")["labels"] == ["es"]
        assert chart(page, "handoffs")["labels"] == []
        page.screenshot(path=str(ARTIFACTS / "dashboard-tenant-telco.png"), full_page=True)

        page.get_by_test_id("period").select_option("custom")
        page.get_by_test_id("from").fill("2020-01-01T00:00")
        page.get_by_test_id("to").fill("2020-01-08T00:00")
        loaded = wait_loaded(page, loaded)
        expect(page.get_by_test_id("sum-turns")).to_have_text("0")
        assert total(chart(page, "volume"), 1) == 0
        expect(page.get_by_test_id("topic")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "dashboard-empty-period.png"), full_page=True)

        page.get_by_test_id("period").select_option("86400")
        loaded = wait_loaded(page, loaded)
        page.get_by_test_id("draft-topic").first.click()
        page.get_by_test_id("draft-name").fill("weather")
        page.get_by_test_id("draft-answer").fill("I cannot tell the weather; a forecast service can.")
        page.get_by_test_id("draft-submit").click()
        expect(page.get_by_test_id("draft-result")).to_contain_text("Written:")
        page.get_by_test_id("reload").click()
        expect(page.get_by_test_id("draft-result")).to_contain_text("Reloaded", timeout=180_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-drafted.png"), full_page=True)
        assert errors == []
    finally:
        context.close()
    served = httpx.get(f"{dashboard_server.url}/api/domain", params={"tenant": "telco"}, headers=dashboard_server.admin_headers, timeout=30)
    assert "weather" in served.json()["intents"]


def test_dashboard_is_served_from_the_bot_with_a_strict_policy(dashboard_server: ServerProcess) -> None:
    page = httpx.get(f"{dashboard_server.url}/dashboard", timeout=10)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    library = httpx.get(f"{dashboard_server.url}/dashboard/chart.umd.min.js", timeout=10)
    assert library.status_code == 200 and "Chart.js" in library.text[:200]
    assert httpx.get(f"{dashboard_server.url}/dashboard/dashboard.html", timeout=10).status_code == 404
    assert httpx.get(f"{dashboard_server.url}/dashboard/..%2Fchat.html", timeout=10).status_code == 404
