"""SIGTERM: turns in flight are answered and stored, every client is told goodbye in its language,
no new session gets in, and after the restart each conversation resumes where it was."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import ChatClient, ServerProcess, fresh_data_dir

QUESTIONS = {
    "en": "What is your return policy?",
    "de": "Wie lange dauert der Versand?",
    "zh": "你们的退货政策是什么？",
}
GOODBYES = {"en": "restarting", "de": "neu gestartet", "zh": "重启"}


async def test_sigterm_finishes_turns_says_goodbye_and_sessions_resume(tmp_path: Path, trained_models: Path) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", trained_models)
    server = ServerProcess(data_dir).start()
    clients: dict[str, ChatClient] = {}
    try:
        for language in QUESTIONS:
            clients[language] = await ChatClient.open(server.ws_url, language=language)
        for language, question in QUESTIONS.items():
            await clients[language].send({"type": "message", "text": question})
        for client in clients.values():
            await client.expect("ack")
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)

        for language, client in clients.items():
            frames = []
            while not frames or frames[-1]["type"] != "ended":
                frames.append(await client.recv(timeout=30))
            answers = [f for f in frames if f["type"] == "message"]
            assert len(answers) == 1, frames  # the turn in flight was finished, not dropped
            goodbye = frames[-1]
            assert goodbye["reason"] == "server_restart" and goodbye["resume"] is True
            assert GOODBYES[language] in goodbye["message"], goodbye
        # Nothing new gets in while it stops, and it stops cleanly.
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{server.url}/api/session-token", json={}, timeout=5).raise_for_status()
        # uvicorn re-raises the signal once shut down, so the exit status is the signal's.
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        log = server.log_path.read_text() if server.log_path else ""
        assert "Traceback" not in log, log
    finally:
        server.stop()

    again = ServerProcess(data_dir).start()
    try:
        for language, client in clients.items():
            resumed = await ChatClient.open(again.ws_url, token=client.session["token"])
            assert resumed.session["resumed"] is True
            assert [t["user_text"] for t in resumed.session["turns"]] == [QUESTIONS[language]]
            await resumed.close()
    finally:
        again.stop()

