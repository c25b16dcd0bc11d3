"""Text-to-speech with the real engines: Piper joe, system espeak-ng, and Coqui VITS.

Speech is checked by ear-proxy: the bundled Whisper base transcribes what the engines said. Whisper
cannot follow espeak-ng's robotic French and Chinese (measured), so those are checked for audio of a
sane length only. No Coqui weights install offline, so its test builds a tiny randomly initialised
VITS model in a folder and checks that the backend loads it and yields audio (noise, not words).
"""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.speech_checks import word_error_rate
from voicebot.pipelines.tts.espeak_backend import EspeakNotFound, EspeakSynthesizer
from voicebot.pipelines.tts.piper_backend import PiperSynthesizer
from voicebot.pipelines.tts.router import VoiceRouter

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")


async def collect(chunks: AsyncIterator[np.ndarray]) -> list[np.ndarray]:
    return [chunk async for chunk in chunks]


# Whisper's exact words of synthetic speech differ between CPUs (DESIGN.md, known pitfalls): a
# listener's check is how much of what was said came through, as a word error rate under a bound.
MAX_WER = 0.35


@pytest.fixture(scope="module")
def whisper() -> Any:
    faster_whisper = pytest.importorskip("faster_whisper")
    from voicebot.voice.models import resolve_whisper

    return faster_whisper.WhisperModel(str(resolve_whisper("base")), device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(model: Any, audio: np.ndarray, rate: int, language: str) -> str:
    """What Whisper hears: the audio goes in as a WAV file, decoded and resampled by PyAV."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    segments, _ = model.transcribe(buffer, language=language, beam_size=5, vad_filter=False, condition_on_previous_text=False)
    return " ".join(segment.text for segment in segments)  # segments are lazy: consume them


def assert_sane_speech(audio: np.ndarray, rate: int, text: str) -> None:
    """Int16 mono, not silent, and about as long as the text: not a click, not minutes of noise."""
    assert audio.dtype == np.int16 and audio.ndim == 1
    seconds = audio.size / rate
    cjk = len(re.findall(r"[\u4e00-\u9fff]", text))  # a Chinese character is a whole syllable
    limit = 1.0 + 0.12 * (len(text) - cjk) + 0.5 * cjk
    assert 0.3 < seconds < limit, f"{seconds:.2f} s of audio for {text!r} (at most {limit:.1f} s expected)"
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 300, "audio is (almost) silent"


# ---------------------------------------------------------------------------- Piper


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    return PiperSynthesizer()  # the bundled joe voice for English


async def test_piper_joe_speaks_english(piper: PiperSynthesizer, whisper: Any) -> None:
    text = "Your order has shipped and will arrive on Monday."
    chunks = await collect(piper.synthesize(text, "en"))
    audio = np.concatenate(chunks)
    assert piper.sample_rate("en") == 22050
    assert_sane_speech(audio, piper.sample_rate("en"), text)
    heard = transcribe(whisper, audio, piper.sample_rate("en"), "en")
    assert word_error_rate(text, heard) <= MAX_WER, heard


async def test_piper_streams_sentence_by_sentence(piper: PiperSynthesizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first sentence is handed out before the second one is synthesised (order, not time)."""
    voice = piper.load("en")
    events: list[str] = []
    real = voice.synthesize

    def spy(text: str, *args: Any, **kwargs: Any) -> Any:
        events.append(f"synthesise: {text}")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(voice, "synthesize", spy)
    text = "Hello there. Your order has shipped. It will arrive on Monday."
    async for chunk in piper.synthesize(text, "en"):
        assert chunk.dtype == np.int16 and chunk.size > 0
        events.append("chunk")
    assert events == [
        "synthesise: Hello there.", "chunk",
        "synthesise: Your order has shipped.", "chunk",
        "synthesise: It will arrive on Monday.", "chunk",
    ]

    # A caller who stops listening after the first sentence (barge-in) stops the synthesis too.
    events.clear()
    async with aclosing(piper.synthesize(text, "en")) as chunks:
        async for _ in chunks:
            break
    assert events == ["synthesise: Hello there."]


# ---------------------------------------------------------------------------- espeak-ng


@pytest.fixture(scope="module")
def espeak() -> EspeakSynthesizer:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return EspeakSynthesizer()


@pytest.mark.parametrize(
    ("language", "text"),
    [
        # Sentences Whisper base follows in espeak-ng's voice (many others it mishears, e.g. "Bestellung").
        ("de", "Guten Tag, wie kann ich Ihnen helfen?"),
        ("es", "Quiero cancelar mi pedido."),
    ],
)
async def test_espeak_speaks_german_and_spanish(espeak: EspeakSynthesizer, whisper: Any, language: str, text: str) -> None:
    audio = np.concatenate(await collect(espeak.synthesize(text, language)))
    rate = espeak.sample_rate(language)
    assert_sane_speech(audio, rate, text)
    heard = transcribe(whisper, audio, rate, language)
    assert word_error_rate(text, heard) <= MAX_WER, heard


@pytest.mark.parametrize(
    ("language", "text"),
    [("fr", "Votre commande est en route."), ("zh", "您好，我可以帮您查询订单。")],
)
async def test_espeak_french_and_chinese_make_sound(espeak: EspeakSynthesizer, language: str, text: str) -> None:
    audio = np.concatenate(await collect(espeak.synthesize(text, language)))
    assert_sane_speech(audio, espeak.sample_rate(language), text)


async def test_espeak_one_chunk_per_sentence_and_rate(espeak: EspeakSynthesizer) -> None:
    text = "Guten Tag. Ihre Bestellung ist unterwegs. Sie kommt am Montag an."
    chunks = await collect(espeak.synthesize(text, "de"))
    assert len(chunks) == 3 and all(chunk.dtype == np.int16 and chunk.size for chunk in chunks)
    slow = EspeakSynthesizer(rate_wpm=100)
    slow_audio = np.concatenate(await collect(slow.synthesize(text, "de")))
    assert slow_audio.size > 1.4 * sum(chunk.size for chunk in chunks)  # a lower rate speaks longer


async def test_espeak_errors_are_clear(espeak: EspeakSynthesizer) -> None:
    with pytest.raises(EspeakNotFound, match="apt-get install espeak-ng"):
        EspeakSynthesizer(binary="espeak-ng-that-does-not-exist")
    # (A name like "no-such-voice" would not do: espeak-ng reads its prefix as Norwegian.)
    with pytest.raises(RuntimeError, match="'zz-none'.*does not exist"):
        await collect(espeak.synthesize("Hallo.", "de", voice="zz-none"))


# ---------------------------------------------------------------------------- the router


@needs_espeak
async def test_router_picks_voices_from_the_locales(piper: PiperSynthesizer) -> None:
    router = VoiceRouter({"piper": piper, "espeak": EspeakSynthesizer()})
    english, german, taiwanese = router.choose("en"), router.choose("de"), router.choose("zh-TW")
    assert (english.backend, english.voice) == ("piper", "joe")
    assert (german.backend, german.voice) == ("espeak", "de")
    assert (taiwanese.locale, taiwanese.backend, taiwanese.voice) == ("zh", "espeak", "cmn")
    assert taiwanese.skipped == ("zh-tw: no voice section",)

    text = "您好，我可以幫您查詢訂單。"
    audio = np.concatenate(await collect(router.synthesize(text, "zh-tw")))
    assert_sane_speech(audio, router.sample_rate("zh-tw"), text)


async def test_router_falls_back_when_a_backend_is_missing(piper: PiperSynthesizer) -> None:
    """German names espeak; without it German speaks with the next voice of its chain (en)."""
    router = VoiceRouter({"piper": piper})
    choice = router.choose("de")
    assert (choice.locale, choice.backend, choice.voice) == ("en", "piper", "joe")
    assert choice.skipped == ("de: backend 'espeak' not available",)
    assert router.sample_rate("de") == 22050


# ---------------------------------------------------------------------------- Coqui


def _tiny_random_vits(folder: Path) -> None:
    """A VITS model a few hundred kB in size with random weights: proves loading and inference
    paths, not speech (no Coqui weights install offline)."""
    import torch

    from voicebot.pipelines.tts.coqui_backend import ensure_coqui_importable

    ensure_coqui_importable()
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    args = VitsArgs(
        hidden_channels=16, hidden_channels_ffn_text_encoder=32, num_heads_text_encoder=2, num_layers_text_encoder=1,
        num_layers_posterior_encoder=1, num_layers_flow=1, use_sdp=False, init_discriminator=False,
        resblock_kernel_sizes_decoder=[3], resblock_dilation_sizes_decoder=[[1, 3, 5]],
        upsample_rates_decoder=[8, 8, 4], upsample_kernel_sizes_decoder=[16, 16, 8], upsample_initial_channel_decoder=16,
    )
    config = VitsConfig(model_args=args, use_phonemes=False, text_cleaner="basic_cleaners")
    torch.manual_seed(0)
    model = Vits(config)
    folder.mkdir(parents=True)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    model.config.save_json(str(folder / "config.json"))


@pytest.mark.skipif(importlib.util.find_spec("TTS") is None, reason="coqui-tts is not installed (pip install 'voicebot[coqui]')")
async def test_coqui_tiny_random_vits_from_a_folder(tmp_path: Path) -> None:
    from voicebot.pipelines.tts.coqui_backend import CoquiSynthesizer

    folder = tmp_path / "tiny-vits"
    _tiny_random_vits(folder)
    coqui = CoquiSynthesizer(folder, device="auto")
    chunks = await collect(coqui.synthesize("Hello there. Your order has shipped.", "en"))
    assert len(chunks) == 2
    assert all(chunk.dtype == np.int16 and chunk.ndim == 1 and chunk.size > 0 for chunk in chunks)
    assert coqui.sample_rate("en") == 22050
    assert np.abs(np.concatenate(chunks)).max() > 0  # random weights: sound, not words

    # The stand-ins coqui needed at import are gone again: other libraries see the real state.
    import sys

    assert not any(type(module).__name__ == "_Unavailable" for module in sys.modules.values())
