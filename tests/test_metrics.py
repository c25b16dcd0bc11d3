"""``GET /metrics`` of a real server after known websocket conversations: what Prometheus scrapes
counts the turns made, by channel, language and path, the hand-offs by reason, the errors the
client saw, and the live sessions (back to 0 once they closed). The key needs ``metrics:read``."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, ADMIN_KEYS_ENV, ChatClient, ServerProcess, free_port, fresh_data_dir

READER_KEY = "transcripts-reader-key-0123456789"
KEYS = json.dumps([*json.loads(ADMIN_KEYS_ENV), {"name": "reader", "key": READER_KEY, "tenant": "*", "scopes": ["transcripts:read"]}])


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    """A server of its own (counts start at zero), also serving metrics on a second address."""
    data_dir = fresh_data_dir(tmp_path_factory.mktemp("metrics"), trained_models)
    listen_port = free_port()
    proc = ServerProcess(data_dir, extra_env={"VOICEBOT_AUTH__API_KEYS": KEYS, "VOICEBOT_METRICS__LISTEN": f"127.0.0.1:{listen_port}"})
    proc.metrics_port = listen_port  # type: ignore[attr-defined]
    proc.start()
    yield proc
    proc.stop()


def scrape(server: ServerProcess) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample by its name (``voicebot_turns_total``, ``..._bucket``), with its labels."""
    response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples_of(response.text)


def samples_of(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == want for k, want in labels.items()))


def test_metrics_need_a_key_with_the_scope(metrics_server: ServerProcess) -> None:
    assert httpx.get(f"{metrics_server.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{metrics_server.url}/metrics", headers={"Authorization": "Bearer not-a-known-key-at-all-000"}, timeout=10).status_code == 401
    lacking = httpx.get(f"{metrics_server.url}/metrics", headers={"Authorization": f"Bearer {READER_KEY}"}, timeout=10)
    assert lacking.status_code == 403 and "metrics:read" in lacking.json()["detail"]


async def test_scraped_counts_match_the_conversations(metrics_server: ServerProcess) -> None:
    before = scrape(metrics_server)
    assert value(before, "voicebot_turns_total") == 0
    assert value(before, "voicebot_active_sessions", channel="websocket") == 0

    english = await ChatClient.open(metrics_server.ws_url, language="en")
    german = await ChatClient.open(metrics_server.ws_url, language="de")
    angry = await ChatClient.open(metrics_server.ws_url, language="en")
    replies = [await english.say("where is my order?"),
               await english.say("what's the weather like in Paris tomorrow?"),
               await english.say("tell me a joke about cats"),  # the second failure in a row: handed off
               await german.say("Ich möchte bitte mit einem echten Mitarbeiter sprechen"),
               await angry.say("This is USELESS, the worst service ever, I am furious!!")]
    await english.send({"type": "no-such-frame"})  # a protocol error the client sees
    refused = await english.expect("error")

    during = scrape(metrics_server)
    assert value(during, "voicebot_active_sessions", channel="websocket") == 3
    made = Counter((r["language"], r["trace"]["response"]["path"]) for r in replies)
    scraped = Counter({(labels["language"], labels["path"]): int(v) for labels, v in during["voicebot_turns_total"]
                       if labels["channel"] == "websocket" and v})
    assert scraped == made
    # Three hand-offs, each counted under the reason its trace gives (which of "asked" and
    # "sentiment" the angry message gets is the NLU's call; both count as hand-offs).
    reasons = Counter(r["trace"]["response"]["handoff_reason"] for r in replies if r["handoff"])
    assert sum(reasons.values()) == 3 and reasons["repeated_failure"] == 1
    assert {labels["reason"]: v for labels, v in during["voicebot_handoffs_total"] if v} == reasons
    assert value(during, "voicebot_errors_total", code=refused["code"]) == 1
    # Every turn observed once in the latency histograms, every stored turn in the storage batcher.
    assert value(during, "voicebot_turn_latency_seconds_count", channel="websocket") == len(replies)
    assert value(during, "voicebot_stage_latency_seconds_count", stage="nlu") == len(replies)
    assert value(during, "voicebot_stage_latency_seconds_count", stage="storage") == len(replies)
    assert value(during, "voicebot_batch_size_sum", batcher="storage") == len(replies)
    assert value(during, "voicebot_batch_wait_seconds_count", batcher="storage") >= 1

    for chat in (english, german, angry):
        await chat.close()
    deadline = time.monotonic() + 20
    while value(after := scrape(metrics_server), "voicebot_active_sessions", channel="websocket") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert value(after, "voicebot_active_sessions", channel="websocket") == 0
    assert value(after, "voicebot_turns_total") == len(replies)


def test_separate_listener_serves_the_same_metrics_without_a_key(metrics_server: ServerProcess) -> None:
    port = metrics_server.metrics_port  # type: ignore[attr-defined]
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    separate = samples_of(response.text)
    assert "voicebot_turns_total" in separate and "voicebot_active_sessions" in separate
    assert value(separate, "voicebot_turns_total") == value(scrape(metrics_server), "voicebot_turns_total")
