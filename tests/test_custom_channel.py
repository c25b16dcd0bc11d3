"""A channel written by an integrator plugs in by configuration alone, and follows the rules every
channel follows (admission, limits, refusals) without writing them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerProcess, fresh_data_dir

PLUGINS = Path(__file__).parent / "plugins"


def _token(server: ServerProcess) -> dict[str, str]:
    response = httpx.post(f"{server.url}/api/session-token", json={}, timeout=30)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def test_integrator_channel_loaded_by_path_serves_the_same_bot(tmp_path: Path, trained_models: Path) -> None:
    env = {"PYTHONPATH": str(PLUGINS), "VOICEBOT_SERVER__CHANNELS": json.dumps(["websocket", "rest_channel:RestChatChannel"]),
           "VOICEBOT_CHANNELS__REST__PATH": "/api-rest/chat"}  # its own [channels.rest] option
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env=env).start()
    try:
        url = f"{server.url}/api-rest/chat"
        refused = httpx.post(url, json={"text": "where is my order?"}, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"  # admission from the base class
        auth = _token(server)
        first = httpx.post(url, json={"text": "where is my order?", "language": "en"}, headers=auth, timeout=30).json()
        assert "order number" in first["text"].lower()
        second = httpx.post(url, json={"text": "12345", "token": first["token"]}, headers=_token(server), timeout=30).json()
        assert "12345" in second["text"] and "Redmi Note 13" not in second["text"]  # asks who is asking
        third = httpx.post(url, json={"text": "li.wei@example.com", "token": first["token"]}, headers=_token(server), timeout=30).json()
        assert "Redmi Note 13" in third["text"]  # same storage, same dialogue state across requests
        listing = httpx.get(f"{server.url}/api/conversations", headers=server.admin_headers, timeout=10).json()
        assert [item["channel"] for item in listing["items"]] == ["rest"]
        gone = httpx.post(url, json={"text": "hi", "token": "no-such-conversation"}, headers=_token(server), timeout=30)
        assert gone.status_code == 404 and gone.json()["error"] == "resume_failed"  # the runtime's refusal, rendered by the base
    finally:
        server.stop()


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicebot", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        env={**os.environ, "PYTHONPATH": str(PLUGINS), **env}, capture_output=True, text=True, timeout=60,
    )


def test_unknown_channel_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    result = _serve(tmp_path, VOICEBOT_SERVER__CHANNELS='["carrier-pigeon"]')
    assert result.returncode == 2 and "unknown channel 'carrier-pigeon'" in result.stderr and "Traceback" not in result.stderr


def test_a_channel_option_it_does_not_take_fails_at_start_naming_it(tmp_path: Path) -> None:
    result = _serve(tmp_path, VOICEBOT_SERVER__CHANNELS='["rest_channel:RestChatChannel"]', VOICEBOT_CHANNELS__REST__PATHH="/x")
    assert result.returncode == 2 and "channels.rest.pathh" in result.stderr and "Traceback" not in result.stderr


def test_options_for_a_channel_that_is_not_served_fail_at_start(tmp_path: Path) -> None:
    result = _serve(tmp_path, VOICEBOT_CHANNELS__WEBRTCC__ICE_LOOPBACK_ONLY="true")
    assert result.returncode == 2 and "channels.webrtcc" in result.stderr and "Traceback" not in result.stderr
