"""An integrator's intent classifier plugs in by configuration alone and serves a real chat."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ChatClient, ServerProcess

PLUGINS = Path(__file__).parent / "plugins"
BACKEND = "centroid_nlu:CentroidIntentClassifier"


async def test_integrator_classifier_loaded_by_config_understands_a_conversation(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(PLUGINS), "VOICEBOT_NLU__BACKEND": BACKEND, "VOICEBOT_NLU__SHARPNESS": "40"}
    server = ServerProcess(tmp_path / "data", extra_env=env).start()
    try:
        chat = await ChatClient.open(server.ws_url, language="en")
        asked = await chat.say("Where is my order?")
        assert asked["trace"]["models"]["nlu"] == "centroid-tfidf"  # the plug-in ranked the intents
        assert asked["trace"]["intent"]["name"] == "order_status" and not asked["trace"]["intent"]["out_of_scope"]
        assert "order number" in asked["text"].lower()
        german = await chat.say("Ich möchte meine Bestellung stornieren")
        assert german["language"] == "de" and german["trace"]["intent"]["name"] == "cancel_order"
        await chat.close()
        saved = list((tmp_path / "data" / "models").glob("nlu-*.joblib"))
        assert saved, "the engine saves the plug-in's trained model like its own"
        # The trace names the model that answered, and every chat client gets it: not the server's folders.
        assert asked["trace"]["models"]["nlu_model_file"] in {path.name for path in saved}
        assert str(tmp_path) not in json.dumps(asked) and str(tmp_path) not in json.dumps(german)
    finally:
        server.stop()


def test_an_option_the_classifier_does_not_take_fails_at_start_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicebot", "train", "--data-dir", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(PLUGINS), "VOICEBOT_NLU__BACKEND": BACKEND, "VOICEBOT_NLU__SHARPNES": "3"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "nlu.sharpnes" in result.stderr and "Traceback" not in result.stderr


def test_a_class_that_does_not_meet_the_contract_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicebot", "train", "--data-dir", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(PLUGINS), "VOICEBOT_NLU__BACKEND": "rest_channel:RestOptions"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "nlu.backend" in result.stderr and "lacks fit" in result.stderr
