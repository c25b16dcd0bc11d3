"""`voicebot chat` scripted through stdin, against the same engine and storage as the server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path


def test_piped_conversation_answers_and_is_stored(tmp_path: Path) -> None:
    script = "where is my order?\n12345\n¿cuál es la política de devoluciones?\n/quit\n"
    result = subprocess.run([sys.executable, "-m", "voicebot", "chat", "--data-dir", str(tmp_path)],
                            input=script, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("bot:")]
    assert len(lines) == 4  # welcome + three answers
    assert "Redmi Note 13" in lines[2] and "30" in lines[3]
    db = sqlite3.connect(tmp_path / "voicebot.sqlite")
    rows = db.execute("SELECT user_text, language FROM turns ORDER BY turn_index").fetchall()
    assert rows == [("where is my order?", "en"), ("12345", "en"), ("¿cuál es la política de devoluciones?", "es")]
