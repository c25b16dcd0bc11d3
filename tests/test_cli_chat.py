"""`voicebot chat` scripted through stdin, against the same engine and storage as the server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from voicebot.config import PrivacySettings
from voicebot.privacy.sealing import Sealer


def test_piped_conversation_answers_and_is_stored(tmp_path: Path) -> None:
    script = "where is my order?\n12345\nli.wei@example.com\n¿cuál es la política de devoluciones?\n/quit\n"
    result = subprocess.run([sys.executable, "-m", "voicebot", "chat", "--data-dir", str(tmp_path)],
                            input=script, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bot:")]
    assert len(lines) == 5  # welcome + four answers
    assert "Redmi Note 13" not in lines[2] and "email" in lines[2]  # the order's owner identifies first
    assert "Redmi Note 13" in lines[3] and "30" in lines[4]
    db = sqlite3.connect(tmp_path / "voicebot.sqlite")
    # Stored encrypted, under the key the chat generated in its data dir.
    sealer = Sealer.from_settings(PrivacySettings(), tmp_path, create_key=False)
    rows = [(sealer.open(text), language) for text, language in db.execute("SELECT user_text, language FROM turns ORDER BY turn_index")]
    assert rows[:2] + rows[3:] == [("where is my order?", "en"), ("12345", "en"), ("¿cuál es la política de devoluciones?", "es")]
    assert rows[2][1] == "en"  # the contact itself is stored as the privacy settings say (redacted by default)
