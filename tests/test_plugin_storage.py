"""A storage backend written by an integrator plugs in by configuration alone (the storage contract).

``tests/plugins/memory_storage.py`` keeps everything in dicts; a real server configured with it
holds real conversations, and the REST API reads them back from it, with no SQLite file anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir
from voicebot.config import Settings, load_settings
from voicebot.core.registry import PluginError
from voicebot.plugins import check_settings
from voicebot.storage.base import STORAGE_METHODS

PLUGINS = Path(__file__).parent / "plugins"


def plugin_env() -> dict[str, str]:
    path = os.pathsep.join(part for part in (str(PLUGINS), os.environ.get("PYTHONPATH", "")) if part)
    return {"PYTHONPATH": path, "VOICEBOT_STORAGE__BACKEND": "memory_storage:MemoryStorage"}


async def test_a_real_conversation_is_stored_in_the_plugin_and_read_back_over_rest(tmp_path: Path, trained_models: Path) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", trained_models)
    server = ServerProcess(data_dir, extra_env=plugin_env()).start()
    try:
        chat = await ChatClient.open(server.ws_url, language="en", user_id="customer-li")
        identify = await chat.say("Hi, where is my order 12345?")
        assert identify["trace"]["identification"]["result"] == "ask" and "Redmi Note 13" not in identify["text"]
        answer = await chat.say("my email is li.wei@example.com")
        assert "12345" in answer["text"] and "Redmi Note 13" in answer["text"]
        session_id, token = chat.session["session_id"], chat.session["token"]
        await chat.close()

        # A reconnect resumes from the plug-in's copy of the dialogue state.
        again = await ChatClient.open(server.ws_url, token=token)
        assert again.session["resumed"] is True and again.session["session_id"] == session_id
        await again.close()

        headers = server.admin_headers
        listing = httpx.get(f"{server.url}/api/conversations", headers=headers, timeout=10).json()
        assert listing["total"] == 1 and [item["id"] for item in listing["items"]] == [session_id]
        assert listing["items"][0]["channel"] == "websocket" and listing["items"][0]["user_id"] == "customer-li"
        saved = httpx.post(f"{server.url}/api/conversations/{session_id}/turns/2/feedback", json={"rating": 1}, headers=headers, timeout=10)
        assert saved.status_code == 200 and saved.json() == {"saved": True}

        detail = httpx.get(f"{server.url}/api/conversations/{session_id}", headers=headers, timeout=10).json()
        turns = detail["turns"]
        assert [turn["turn_index"] for turn in turns] == [1, 2] and turns[1]["rating"] == 1
        assert turns[0]["user_text"] == "Hi, where is my order 12345?"
        assert turns[0]["trace"]["intent"]["name"] == "order_status"
        # The contract's privacy: the transcript is redacted as stored, the state keeps the real value.
        assert turns[1]["user_text"] == "my email is <EMAIL>" and "li.wei@example.com" not in turns[1]["bot_text"]
        assert detail["state"]["slots"]["order_id"]["value"] == "12345"
        assert httpx.get(f"{server.url}/api/conversations/nope", headers=headers, timeout=10).status_code == 404

        erased = httpx.delete(f"{server.url}/api/customers/customer-li", headers=headers, timeout=10).json()
        assert erased["conversations"] == 1 and erased["turns"] == 2
        assert httpx.get(f"{server.url}/api/conversations", headers=headers, timeout=10).json()["total"] == 0
        audit = httpx.get(f"{server.url}/api/audit", headers=headers, timeout=10).json()
        assert [item["action"] for item in audit["items"]] == ["erase_customer"]
    finally:
        server.stop()
    # Nothing went to the built-in backend.
    assert not list(data_dir.glob("voicebot.sqlite*"))


class HalfStorage:
    """A backend that forgot most of the contract."""

    async def open(self, *, create: bool = True) -> None: ...
    async def close(self) -> None: ...
    async def save_turn(self, *args: object) -> None: ...


def test_a_backend_missing_contract_methods_is_refused_at_start_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEBOT_STORAGE__BACKEND", f"{__name__}:HalfStorage")
    with pytest.raises(PluginError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("storage.backend: ") and "HalfStorage" in message
    assert "lacks create_conversation" in message and "export_turns" in message and "docs/extending.md" in message
    assert "save_turn" not in message.split("lacks", 1)[1]


def test_the_memory_plugin_and_the_builtin_backends_fulfil_the_whole_contract() -> None:
    check_settings(Settings(storage={"backend": "sqlite"}))
    check_settings(Settings(storage={"backend": "postgres", "url": "postgresql://voicebot@db.example/voicebot"}))
    import sys

    sys.path.insert(0, str(PLUGINS))
    try:
        check_settings(Settings(storage={"backend": "memory_storage:MemoryStorage"}))
    finally:
        sys.path.remove(str(PLUGINS))
    assert {"save_turn", "erase_customer", "rotate_encryption", "export_turns", "list_audit"} <= set(STORAGE_METHODS)
