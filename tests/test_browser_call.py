"""A voice call from real headless Chromium: its fake microphone plays a WAV question, the call
page shows both transcripts, and the bot's answer comes back as audio on the peer connection.

Waits come from this machine's measured compute (``tests/voice_budget.py``); the caller's line is
checked for being there, not for Whisper's exact words (they differ between CPUs): the answer
about returns ("30" days) is what shows the question was understood."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.browser_fixtures import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import ServerProcess, fresh_data_dir
from tests.test_browser import playwright_sync
from tests.voice_budget import MEASURED_TEXT, ComputeBudget, measure

expect = playwright_sync.expect
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, ComputeBudget]:
    """The question as a WAV for Chromium's fake microphone, its duration, and this machine's
    compute budget (one recognition and one synthesis of it, timed now)."""
    import soundfile

    from voicebot.pipelines.asr.faster_whisper_backend import FasterWhisperRecognizer
    from voicebot.pipelines.tts.router import VoiceRouter

    router = VoiceRouter.default()
    whisper = FasterWhisperRecognizer("base")

    async def speak() -> np.ndarray:
        return np.concatenate([chunk async for chunk in router.synthesize(MEASURED_TEXT, "en")])

    try:
        speech = asyncio.run(speak())
        budget = asyncio.run(measure(whisper, router, MEASURED_TEXT))
        rate = router.sample_rate("en")
    finally:
        router.close()
        whisper.close()
    path = tmp_path_factory.mktemp("wav") / "question.wav"
    silence = np.zeros(rate, dtype=np.int16)
    audio = np.concatenate([silence, speech, silence, silence, silence])
    soundfile.write(str(path), audio, rate)
    return path, len(audio) / rate, budget


@pytest.fixture(scope="module")
def call_server(tmp_path_factory: pytest.TempPathFactory, trained_models: Path,
                question: tuple[Path, float, ComputeBudget]) -> Iterator[ServerProcess]:
    env = {"VOICEBOT_SERVER__CHANNELS": '["websocket", "webrtc"]', "VOICEBOT_CHANNELS__WEBRTC__ICE_LOOPBACK_ONLY": "true"}
    server = ServerProcess(fresh_data_dir(tmp_path_factory.mktemp("call"), trained_models), extra_env=env).start(timeout=question[2].startup())
    yield server
    server.stop()


def test_chromium_caller_hears_the_answer(call_server: ServerProcess, question: tuple[Path, float, ComputeBudget]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    question_wav, audio_s, budget = question
    setup_ms, turn_ms = budget.setup() * 1000, budget.turn(audio_s) * 1000
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={question_wav}%noloop", "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_context(locale="en-US").new_page()
            page.set_default_timeout(setup_ms)
            page.goto(f"{call_server.url}/call?raw")
            page.get_by_test_id("call").click()
            user = page.get_by_test_id("user-line").first
            expect(user).to_be_visible(timeout=setup_ms + turn_ms)  # what the caller said, as the bot heard it
            expect(user).not_to_be_empty()
            bot = page.get_by_test_id("bot-line").first
            expect(bot).to_contain_text("30", timeout=turn_ms)  # the return policy: 30 days
            assert bot.get_attribute("lang") == "en"
            # The bot's voice arrives as a live audio track on the call.
            page.wait_for_function("() => { const s = document.getElementById('remote').srcObject;"
                                   " return s && s.getAudioTracks().some(t => t.readyState === 'live'); }", timeout=setup_ms)
            ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "call.png"))
            page.get_by_test_id("call").click()  # hang up
            expect(page.get_by_test_id("status")).to_contain_text("ended", timeout=setup_ms)
        finally:
            browser.close()
