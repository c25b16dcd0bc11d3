"""An integrator's speech recogniser and voice plug in by configuration alone and serve a real
call: an aiortc caller on loopback speaks (Piper), the plug-in recogniser hears it, the bot answers
through the plug-in voice (a command-line synthesizer), and the caller hears that answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess, fresh_data_dir
from voicebot.channels.webrtc.caller import Caller

PLUGINS = Path(__file__).parent / "plugins"
ENV = {
    "PYTHONPATH": str(PLUGINS),
    "VOICEBOT_SERVER__CHANNELS": '["websocket", "webrtc"]', "VOICEBOT_CHANNELS__WEBRTC__ICE_LOOPBACK_ONLY": "true",
    "VOICEBOT_ASR__BACKEND": "vocabulary_asr:VocabularyRecognizer",
    "VOICEBOT_ASR__INNER_OPTIONS": json.dumps({"model": "base"}),
    "VOICEBOT_ASR__REPLACEMENTS": json.dumps({"auder": "order", "peligro": "pedido"}),
    "VOICEBOT_TTS__BACKEND": "command_tts:CommandSynthesizer",
}


@pytest.fixture(scope="module")
def plugin_voice_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("plugin-voice"), trained_models), extra_env=ENV).start(timeout=240)
    yield server
    server.stop()


async def _speech_48k(text: str) -> np.ndarray:
    import soxr

    from voicebot.pipelines.tts.piper_backend import PiperSynthesizer

    piper = PiperSynthesizer()
    try:
        chunks = [chunk async for chunk in piper.synthesize(text, "en")]
        return soxr.resample(np.concatenate(chunks), piper.sample_rate("en"), 48_000).astype(np.int16)
    finally:
        piper.close()


async def test_plugin_recogniser_and_voice_serve_a_call(plugin_voice_server: ServerProcess) -> None:
    caller = Caller(plugin_voice_server.url, "en", loopback_only=True)
    await caller.connect()
    try:
        await caller.wait_for("session", timeout=30)
        silence = np.zeros(9600, dtype=np.int16)
        ended = await caller.say(np.concatenate([silence, await _speech_48k("Where is my order?"), silence]))
        message = (await caller.wait_for("bot_message", timeout=120))[0]
        await caller.wait_quiet(120)
        assert message["trace"]["voice"]["asr"]["model"] == "vocabulary+faster-whisper:base"  # the plug-in heard it
        assert message["trace"]["intent"]["name"] == "order_status" and "order number" in message["text"].lower()
        assert caller.latency_after(ended) is not None  # the caller heard the plug-in voice answer
        heard = caller.recording.audio()
        assert np.abs(heard.astype(np.float32)).max() > 1000  # real speech, not silence
    finally:
        await caller.hang_up()
