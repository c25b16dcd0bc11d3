"""A channel written by an integrator plugs in by configuration alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerProcess, fresh_data_dir

FIXTURES = Path(__file__).parent / "fixtures"


def test_integrator_channel_loaded_by_path_serves_the_same_bot(tmp_path: Path, trained_models: Path) -> None:
    env = {"PYTHONPATH": str(FIXTURES), "VOICEBOT_SERVER__CHANNELS": json.dumps(["websocket", "rest_channel:RestChatChannel"])}
    server = ServerProcess(fresh_data_dir(tmp_path / "data", trained_models), extra_env=env).start()
    try:
        first = httpx.post(f"{server.url}/rest/chat", json={"text": "where is my order?", "language": "en"}, timeout=30).json()
        assert "order number" in first["text"].lower()
        second = httpx.post(f"{server.url}/rest/chat", json={"text": "12345", "token": first["token"]}, timeout=30).json()
        assert "12345" in second["text"] and "Redmi Note 13" not in second["text"]  # asks who is asking
        third = httpx.post(f"{server.url}/rest/chat", json={"text": "li.wei@example.com", "token": first["token"]}, timeout=30).json()
        assert "Redmi Note 13" in third["text"]  # same storage, same dialogue state across requests
        listing = httpx.get(f"{server.url}/api/conversations", headers=server.admin_headers, timeout=10).json()
        assert [item["channel"] for item in listing["items"]] == ["rest"]
    finally:
        server.stop()


def test_unknown_channel_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicebot", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        env={**os.environ, "VOICEBOT_SERVER__CHANNELS": '["carrier-pigeon"]'}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "unknown channel 'carrier-pigeon'" in result.stderr and "Traceback" not in result.stderr
