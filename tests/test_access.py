"""Access control against a real server: session tokens for the live channels, API keys with
scopes for the REST API, web origins, and tenants that cannot see each other's data."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ADMIN_KEYS_ENV, ChatClient, ServerProcess, fresh_data_dir, session_token
from voicebot.resources import demo_domain_dir

ACME_KEY = "acme-support-key-0123456789abcdef"
GLOBEX_KEY = "globex-support-key-0123456789abcdef"
ACME_READER = "acme-reader-only-key-0123456789ab"
ACME_BACKEND = "acme-backend-issuer-key-0123456789"
SHOP = "https://shop.acme.example"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def globex_domain(base: Path) -> Path:
    """The demo domain under another name, whose return policy differs (and says so)."""
    folder = base / "globex-domain"
    shutil.copytree(demo_domain_dir(), folder)
    domain = folder / "domain.yaml"
    domain.write_text(domain.read_text(encoding="utf-8").replace("name: demo", "name: globex", 1), encoding="utf-8")
    kb = folder / "kb" / "en.yaml"
    text = kb.read_text(encoding="utf-8")
    assert "You have 30 days to return unused items" in text
    kb.write_text(text.replace("You have 30 days to return unused items", "GLOBEX customers have 60 days to return unused items"), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tenants_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("tenants")
    keys = [
        {"name": "acme-support", "key": ACME_KEY, "tenant": "acme", "scopes": ["transcripts:read", "feedback:write", "domain:manage", "data:erase"]},
        {"name": "globex-support", "key": GLOBEX_KEY, "tenant": "globex", "scopes": ["transcripts:read", "domain:manage"]},
        {"name": "acme-reader", "key": ACME_READER, "tenant": "acme", "scopes": ["transcripts:read"]},
        {"name": "acme-backend", "key": ACME_BACKEND, "tenant": "acme", "scopes": ["sessions:issue"]},
    ]
    env = {
        "VOICEBOT_TENANTS": json.dumps({"acme": {"domain": str(demo_domain_dir()), "allowed_origins": [SHOP]},
                                        "globex": {"domain": str(globex_domain(base))}}),
        "VOICEBOT_AUTH__API_KEYS": json.dumps(keys + json.loads(ADMIN_KEYS_ENV)),
    }
    server = ServerProcess(fresh_data_dir(base / "data", trained_models), extra_env=env).start(timeout=180)
    yield server
    server.stop()


async def refused_status(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return refused.value.response.status_code


# -- session tokens ---------------------------------------------------------------------------------
async def test_websocket_needs_a_valid_unexpired_token(server: ServerProcess) -> None:
    assert await refused_status(server.ws_url) == 401
    assert await refused_status(f"{server.ws_url}?access_token=not-a-token") == 401
    forged = jwt.encode({"aud": "voicebot-session", "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "x", "tenant": "default"},
                        "a-secret-that-is-not-the-servers-own-0123456789", algorithm="HS256")
    assert await refused_status(f"{server.ws_url}?access_token={forged}") == 401
    secret = (server.data_dir / "signing.secret").read_text().strip()
    expired = jwt.encode({"aud": "voicebot-session", "iat": int(time.time()) - 1000, "exp": int(time.time()) - 10, "jti": "x",
                          "tenant": "default"}, secret, algorithm="HS256")
    assert await refused_status(f"{server.ws_url}?access_token={expired}") == 401
    # The real thing works, and the refusals harmed nothing.
    chat = await ChatClient.open(server.ws_url, language="en")
    assert (await chat.say("what is your return policy?"))["trace"]["knowledge"]["used"] == "return_policy"
    await chat.close()


def test_webrtc_offer_needs_a_token(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/webrtc/offer", json={"sdp": "v=0 " * 5, "type": "offer"}, timeout=10)
    # The chat-only server has no webrtc route; a voice server refuses before parsing SDP (tests/test_voice.py).
    assert response.status_code in (401, 404, 405)


def test_rest_api_needs_a_key_with_the_right_scope(tenants_server: ServerProcess) -> None:
    url = f"{tenants_server.url}/api/conversations"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=bearer("wrong-key-0123456789abcdefghij"), timeout=10).status_code == 401
    assert httpx.get(url, headers={"X-API-Key": ACME_READER}, timeout=10).status_code == 200
    # A read-only key cannot rate, manage the domain or swap the generator.
    assert httpx.post(f"{url}/x/feedback", json={"rating": 3}, headers=bearer(ACME_READER), timeout=10).status_code == 403
    assert httpx.get(f"{tenants_server.url}/api/domain", headers=bearer(ACME_READER), timeout=10).status_code == 403
    assert httpx.put(f"{tenants_server.url}/api/generator", json={"model": "x"}, headers=bearer(ACME_KEY), timeout=10).status_code == 403
    schema = httpx.get(f"{tenants_server.url}/openapi.json", timeout=10).json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


def test_web_origins_are_checked(tenants_server: ServerProcess) -> None:
    token_url = f"{tenants_server.url}/api/session-token"
    evil = httpx.post(token_url, json={"tenant": "acme"}, headers={"Origin": "https://evil.example"}, timeout=10)
    assert evil.status_code == 403 and "origin" in evil.json()["detail"]
    good = httpx.post(token_url, json={"tenant": "acme"}, headers={"Origin": SHOP}, timeout=10)
    assert good.status_code == 200 and good.headers["access-control-allow-origin"] == SHOP


async def test_a_token_used_from_another_origin_is_refused(tenants_server: ServerProcess) -> None:
    token = await session_token(tenants_server.ws_url, tenant="acme")
    url = f"{tenants_server.ws_url}?access_token={token}"
    assert await refused_status(url, origin="https://evil.example") == 403
    async with connect(url, origin=SHOP) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "start", "language": "en"}))
        assert json.loads(await ws.recv())["type"] == "session"


def test_only_a_key_holder_may_vouch_for_a_customer(tenants_server: ServerProcess) -> None:
    token_url = f"{tenants_server.url}/api/session-token"
    customer = {"email": "li.wei@example.com"}
    assert httpx.post(token_url, json={"tenant": "acme", "customer": customer}, timeout=10).status_code == 403
    assert httpx.post(token_url, json={"tenant": "acme", "customer": customer}, headers=bearer(ACME_READER), timeout=10).status_code == 403
    assert httpx.post(token_url, json={"tenant": "globex"}, headers=bearer(ACME_BACKEND), timeout=10).status_code == 403
    issued = httpx.post(token_url, json={"tenant": "acme", "customer": customer}, headers=bearer(ACME_BACKEND), timeout=10)
    assert issued.status_code == 200 and issued.json()["tenant"] == "acme"
    assert httpx.post(token_url, json={"tenant": "initech"}, timeout=10).status_code == 403


def test_anonymous_tokens_can_be_switched_off(tmp_path: Path, trained_models: Path) -> None:
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env={"VOICEBOT_AUTH__ANONYMOUS_SESSIONS": "false"}).start()
    try:
        token_url = f"{server.url}/api/session-token"
        assert httpx.post(token_url, json={}, timeout=10).status_code == 401
        assert httpx.post(token_url, json={}, headers=server.admin_headers, timeout=10).status_code == 200
    finally:
        server.stop()


def test_token_requests_per_address_are_limited(tmp_path: Path, trained_models: Path) -> None:
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env={"VOICEBOT_LIMITS__SESSION_TOKENS_PER_MINUTE": "5"}).start()
    try:
        answers = [httpx.post(f"{server.url}/api/session-token", json={}, timeout=10) for _ in range(7)]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
        assert int(answers[-1].headers["retry-after"]) >= 1
        # A key holder (the integrator's backend) is not limited by address.
        assert httpx.post(f"{server.url}/api/session-token", json={}, headers=server.admin_headers, timeout=10).status_code == 200
    finally:
        server.stop()


# -- tenants ----------------------------------------------------------------------------------------
async def test_tenants_cannot_reach_each_others_conversations_or_knowledge(tenants_server: ServerProcess) -> None:
    acme = await ChatClient.open(tenants_server.ws_url, access_token=await session_token(tenants_server.ws_url, tenant="acme"), language="en")
    globex = await ChatClient.open(tenants_server.ws_url, access_token=await session_token(tenants_server.ws_url, tenant="globex"), language="en")
    acme_answer = await acme.say("What is your return policy?")
    globex_answer = await globex.say("What is your return policy?")
    assert "30 days" in acme_answer["text"] and "GLOBEX" not in acme_answer["text"]
    assert "GLOBEX customers have 60 days" in globex_answer["text"]
    acme_id, globex_id = acme.session["session_id"], globex.session["session_id"]
    globex_resume = globex.session["token"]
    await acme.close()
    await globex.close()

    api = f"{tenants_server.url}/api/conversations"
    acme_list = httpx.get(api, headers=bearer(ACME_KEY), params={"limit": 500}, timeout=10).json()
    assert {item["tenant"] for item in acme_list["items"]} == {"acme"} and acme_id in {item["id"] for item in acme_list["items"]}
    assert globex_id not in {item["id"] for item in acme_list["items"]}
    # Another tenant's conversation looks exactly like one that does not exist.
    assert httpx.get(f"{api}/{globex_id}", headers=bearer(ACME_KEY), timeout=10).status_code == 404
    assert httpx.get(f"{api}/{globex_id}/turns/1/trace", headers=bearer(ACME_KEY), timeout=10).status_code == 404
    assert httpx.post(f"{api}/{globex_id}/feedback", json={"rating": 1}, headers=bearer(ACME_KEY), timeout=10).status_code == 404
    assert httpx.get(api, headers=bearer(ACME_KEY), params={"tenant": "globex"}, timeout=10).status_code == 403
    assert httpx.get(f"{api}/{globex_id}", headers=bearer(GLOBEX_KEY), timeout=10).json()["turns"][0]["bot_text"] == globex_answer["text"]
    # An operator key sees both, or one tenant when it asks.
    everyone = httpx.get(api, headers=tenants_server.admin_headers, params={"limit": 500}, timeout=10).json()
    assert {acme_id, globex_id} <= {item["id"] for item in everyone["items"]}
    only_globex = httpx.get(api, headers=tenants_server.admin_headers, params={"tenant": "globex", "limit": 500}, timeout=10).json()
    assert {item["tenant"] for item in only_globex["items"]} == {"globex"}

    # Knowledge base: each key sees its own tenant's articles only.
    acme_domain = httpx.get(f"{tenants_server.url}/api/domain", headers=bearer(ACME_KEY), timeout=10).json()
    globex_domain_info = httpx.get(f"{tenants_server.url}/api/domain", headers=bearer(GLOBEX_KEY), timeout=10).json()
    assert (acme_domain["tenant"], acme_domain["name"]) == ("acme", "demo")
    assert (globex_domain_info["tenant"], globex_domain_info["name"]) == ("globex", "globex")

    # A resume token of a globex conversation does not open it through an acme session token.
    async with connect(f"{tenants_server.ws_url}?access_token={await session_token(tenants_server.ws_url, tenant='acme')}") as ws:
        await ws.send(json.dumps({"type": "resume", "token": globex_resume}))
        answer = json.loads(await ws.recv())
        assert answer["type"] == "error" and answer["code"] == "resume_failed"


async def test_domain_reload_refuses_a_broken_domain_and_keeps_serving(tmp_path: Path, trained_models: Path) -> None:
    folder = tmp_path / "domain"
    shutil.copytree(demo_domain_dir(), folder)
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env={"VOICEBOT_DOMAIN__PATH": str(folder)}).start()
    try:
        kb = folder / "kb" / "en.yaml"
        kb.write_text(kb.read_text(encoding="utf-8").replace("You have 30 days", "You now have 45 days"), encoding="utf-8")
        reloaded = httpx.post(f"{server.url}/api/domain/reload", headers=server.admin_headers, timeout=120)
        assert reloaded.status_code == 200
        chat = await ChatClient.open(server.ws_url, language="en")
        assert "45 days" in (await chat.say("What is your return policy?"))["text"]
        await chat.close()
        (folder / "domain.yaml").write_text("name: [broken\n", encoding="utf-8")
        broken = httpx.post(f"{server.url}/api/domain/reload", headers=server.admin_headers, timeout=120)
        assert broken.status_code == 422 and "domain.yaml" in broken.json()["detail"]
        chat = await ChatClient.open(server.ws_url, language="en")
        assert "45 days" in (await chat.say("What is your return policy?"))["text"]
        await chat.close()
    finally:
        server.stop()


async def test_erasure_through_the_api_stays_in_the_keys_tenant_and_is_audited(tenants_server: ServerProcess) -> None:
    ws = tenants_server.ws_url
    ids = {}
    for tenant in ("acme", "globex"):
        chat = await ChatClient.open(ws, access_token=await session_token(ws, tenant=tenant), language="en", user_id="cust-42")
        await chat.say("What is your return policy? Write to me at erase.me@example.com")
        ids[tenant] = chat.session["session_id"]
        await chat.close()
    api = tenants_server.url
    assert httpx.delete(f"{api}/api/customers/cust-42", headers=bearer(ACME_READER), timeout=10).status_code == 403
    erased = httpx.delete(f"{api}/api/customers/cust-42", headers=bearer(ACME_KEY), timeout=30)
    assert erased.status_code == 200 and erased.json()["conversations"] == 1 and erased.json()["turns"] == 1
    assert httpx.get(f"{api}/api/conversations/{ids['acme']}", headers=bearer(ACME_KEY), timeout=10).status_code == 404
    # The other tenant's customer of the same id is not touched.
    kept = httpx.get(f"{api}/api/conversations/{ids['globex']}", headers=bearer(GLOBEX_KEY), timeout=10).json()
    assert kept["user_id"] == "cust-42" and "<EMAIL>" in kept["turns"][0]["user_text"]
    assert "erase.me@example.com" not in json.dumps(kept)  # nor in its trace or dialogue state
    assert erased.json()["profiles"] == 0  # the profile stays while globex still serves this customer
    globex_erased = httpx.delete(f"{api}/api/customers/cust-42", headers=tenants_server.admin_headers, params={"tenant": "globex"}, timeout=30)
    assert globex_erased.json()["conversations"] == 1 and globex_erased.json()["profiles"] == 1
    audit = httpx.get(f"{api}/api/audit", headers=bearer(ACME_KEY), timeout=10).json()
    record = next(item for item in audit["items"] if item["id"] == erased.json()["audit_id"])
    assert (record["action"], record["actor"], record["tenant"]) == ("erase_customer", "acme-support", "acme")
    assert "cust-42" not in json.dumps(audit) and "erase.me" not in json.dumps(audit)


async def test_a_customer_vouched_for_by_the_backend_is_not_asked_to_identify(tenants_server: ServerProcess) -> None:
    ws = tenants_server.ws_url
    vouched = await session_token(ws, headers=bearer(ACME_BACKEND), tenant="acme", customer={"email": "li.wei@example.com"})
    chat = await ChatClient.open(ws, access_token=vouched, language="en")
    answer = await chat.say("Where is my order 12345?")
    assert "Redmi Note 13" in answer["text"], answer["text"]
    # The same customer cannot see someone else's order by asking.
    other = await chat.say("And where is order 54321?")
    assert "Router AX3000" not in other["text"]
    await chat.close()
    stranger = await ChatClient.open(ws, access_token=await session_token(ws, tenant="acme"), language="en")
    assert "Redmi Note 13" not in (await stranger.say("Where is my order 12345?"))["text"]
    await stranger.close()
