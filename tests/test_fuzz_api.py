"""Fuzzing the REST API against its own OpenAPI document (schemathesis 4, real server process).

Schemathesis reads the live ``/openapi.json`` and, for every operation, sends schema-valid and
schema-violating requests (path ids, huge integers, odd strings, wrong bodies). Every answer must
be a non-5xx status the document declares, with the declared content type and a body matching
the declared schema; invalid requests must be refused with a 4xx. A second, targeted property
test aims at what generic fuzzing rarely reaches: real conversation ids with out-of-range turn
indices and offsets (SQLite integers are 64-bit; Python's are not).

The server is this module's own; requests carry the test operator key (every scope), so the
fuzzer reaches the handlers instead of stopping at 401; a conversation is seeded so ids exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir

FUZZ_ENV = {"VOICEBOT_LIMITS__SESSION_TOKENS_PER_MINUTE": "100000"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, negative_data_rejection]


async def _seed(server: ServerProcess) -> str:
    """One stored conversation with two turns, so real ids exist for the fuzzer."""
    chat = await ChatClient.open(server.ws_url, language="en")
    await chat.say("where is my order 12345")
    await chat.say("what is your return policy?")
    await chat.close()
    return str(chat.session["session_id"])


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("fuzz-api"), trained_models), extra_env=FUZZ_ENV).start()
    server.seeded_id = asyncio.run(_seed(server))  # type: ignore[attr-defined]
    yield server
    server.stop()


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers() | st.sampled_from([-1, 0, 1, 2, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30]),
    rating=st.sampled_from([-1, 1]),
    offset=st.integers(min_value=0) | st.sampled_from([2**63 - 1, 2**63, 10**30]),
)
def test_out_of_range_integers_get_4xx_not_5xx(api_server: ServerProcess, index: int, rating: int, offset: int) -> None:
    base, conversation = api_server.url, api_server.seeded_id  # type: ignore[attr-defined]
    with httpx.Client(base_url=base, headers=api_server.admin_headers, timeout=30) as client:
        expected = (200 if index in (1, 2) else 404) if 0 <= index < 2**63 else 422  # turn indices are 0..SQLite's max
        trace = client.get(f"/api/conversations/{conversation}/turns/{index}/trace")
        assert trace.status_code == expected, trace.text
        rated = client.post(f"/api/conversations/{conversation}/turns/{index}/feedback", json={"rating": rating})
        assert rated.status_code == expected, rated.text
        page = client.get("/api/conversations", params={"offset": offset, "limit": 5})
        assert page.status_code == (200 if offset < 2**63 else 422), page.text
        if page.status_code == 200:
            assert page.json()["items"] == [] or offset == 0
        assert client.get("/health").json()["status"] == "ok"


@pytest.fixture(scope="module")
def api_schema(api_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json", timeout=30)


# schemathesis' own pytest integration (``schema.parametrize()``, ``pytest.from_fixture``) needs a
# private attribute pytest 9 no longer has (``Node._nodeid``), and a schema loaded at import time
# cannot know the port of a server started by a fixture; so each operation's strategy is driven
# with hypothesis directly, which is what ``parametrize`` does underneath.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_conforms_to_its_schema(api_server: ServerProcess, api_schema: Any, mode: GenerationMode) -> None:
    headers = api_server.admin_headers
    failures: dict[str, BaseException] = {}
    tested = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(mode, headers=headers))
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

        try:
            check()
        except Unsatisfiable:
            continue  # nothing negative to say about an operation without inputs
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation's failures, reported at once
            failures[operation.label] = exc
        tested += 1
        assert api_server.process is not None and api_server.process.poll() is None, f"the server died on {operation.label}"
    assert tested >= 5
    assert not failures, f"{sorted(failures)}\n\n" + "\n\n".join(f"{label}:\n{exc}" for label, exc in failures.items())
