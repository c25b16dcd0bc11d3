"""pipelines/ and channels/ install under the voicebot namespace, from an editable install and a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import importlib.util, json, voicebot
from voicebot.resources import demo_domain_dir, locales_dir
import voicebot.pipelines.nlu.charngram, voicebot.channels.websocket.channel, voicebot.core.runtime, voicebot.server
import voicebot.pipelines.generation.seq2seq, voicebot.pipelines.asr.base, voicebot.pipelines.tts.base, voicebot.learning.export
from voicebot.dialogue.domain import load_domain
domain, problems = load_domain(demo_domain_dir())
print(json.dumps({
    "voicebot": voicebot.__file__,
    "pipelines": voicebot.pipelines.__file__,
    "channels": voicebot.channels.__file__,
    "top_level_pipelines": importlib.util.find_spec("pipelines") is not None,
    "top_level_channels": importlib.util.find_spec("channels") is not None,
    "locales": sorted(p.name for p in locales_dir().glob("*.yaml")),
    "demo_languages": domain.languages,
    "errors": [str(p) for p in problems if p.severity == "error"],
}))
"""


def probe(cwd: Path, pythonpath: str | None = None) -> dict:  # type: ignore[type-arg]
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_installed_package_imports_under_the_voicebot_namespace(tmp_path: Path) -> None:
    found = probe(tmp_path)
    assert found["pipelines"].endswith("pipelines/__init__.py")
    assert not found["top_level_pipelines"] and not found["top_level_channels"]
    assert "zh.yaml" in found["locales"] and found["demo_languages"] == ["en", "zh", "es", "de", "fr"]
    assert found["errors"] == []


def test_built_wheel_contains_and_serves_everything(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("voicebot-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "voicebot/pipelines/nlu/charngram.py" in names and "voicebot/channels/base.py" in names
    assert "voicebot/locales/zh.yaml" in names and "voicebot/examples/demo/nlu/fr.yaml" in names
    assert "voicebot/web/chat.html" in names and "voicebot/web/call.html" in names
    assert "voicebot/pipelines/generation/seq2seq.py" in names and "voicebot/pipelines/vad/silero.py" in names
    assert not any(name.startswith(("pipelines/", "channels/", "tests/")) for name in names)
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    found = probe(tmp_path, pythonpath=str(unpacked))
    assert found["voicebot"].startswith(str(unpacked)), "the wheel's copy must be the one imported"
    assert found["channels"].startswith(str(unpacked / "voicebot" / "channels"))
    assert "en.yaml" in found["locales"] and found["errors"] == []
