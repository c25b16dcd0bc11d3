"""A voice call from real headless Chromium: its fake microphone plays a WAV question, the call
page shows both transcripts, and the bot's answer comes back as audio on the peer connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServerProcess, fresh_data_dir
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, playwright_sync

expect = playwright_sync.expect
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundfile

    from voicebot.pipelines.tts.router import VoiceRouter

    router = VoiceRouter.default()

    async def speak() -> np.ndarray:
        return np.concatenate([chunk async for chunk in router.synthesize("What is your return policy?", "en")])

    speech = asyncio.run(speak())
    rate = router.sample_rate("en")
    router.close()
    path = tmp_path_factory.mktemp("wav") / "question.wav"
    silence = np.zeros(rate, dtype=np.int16)
    soundfile.write(str(path), np.concatenate([silence, speech, silence, silence, silence]), rate)
    return path


@pytest.fixture(scope="module")
def call_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path) -> Iterator[ServerProcess]:
    env = {"VOICEBOT_SERVER__CHANNELS": '["websocket", "webrtc"]', "VOICEBOT_CHANNELS__WEBRTC__ICE_LOOPBACK_ONLY": "true"}
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("call"), trained_models), extra_env=env).start(timeout=240)
    yield server
    server.stop()


def test_chromium_caller_hears_the_answer(call_server: ServerProcess, question_wav: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={question_wav}%noloop", "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_context(locale="en-US").new_page()
            page.goto(f"{call_server.url}/call?raw")
            page.get_by_test_id("call").click()
            expect(page.get_by_test_id("user-line").first).to_contain_text("return", ignore_case=True, timeout=60_000)
            bot = page.get_by_test_id("bot-line").first
            expect(bot).to_contain_text("30", timeout=60_000)
            assert bot.get_attribute("lang") == "en"
            # The bot's voice arrives as a live audio track on the call.
            page.wait_for_function("() => { const s = document.getElementById('remote').srcObject;"
                                   " return s && s.getAudioTracks().some(t => t.readyState === 'live'); }", timeout=30_000)
            ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "call.png"))
            page.get_by_test_id("call").click()  # hang up
            expect(page.get_by_test_id("status")).to_contain_text("ended", timeout=15_000)
        finally:
            browser.close()
