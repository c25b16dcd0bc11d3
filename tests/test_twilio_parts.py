"""The phone channel's parts on their own, with real components and no server: G.711 and the
8 kHz resampling, the media-stream sink's pacing and marks, the keypad, the wire format, the
TwiML and the call-bound stream token."""

from __future__ import annotations

import asyncio
import base64
import warnings
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from pydantic import ValidationError

from voicebot.access.tokens import AccessDenied, SessionTokenIssuer
from voicebot.channels.twilio import messages
from voicebot.channels.twilio.codec import FRAME_SAMPLES, RATE, pcm_to_ulaw, ulaw_to_pcm
from voicebot.channels.twilio.keypad import Keypad
from voicebot.channels.twilio.sink import MediaStreamSink
from voicebot.channels.twilio.webhook import connect_stream, dial, signature_valid
from voicebot.voice.audio import StreamResampler, to_int16

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def tone(frequency: float, rate: int, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def test_mulaw_is_g711_both_ways() -> None:
    samples = to_int16(tone(440, RATE, 0.5, 0.8))
    encoded = pcm_to_ulaw(samples)
    assert len(encoded) == len(samples) and encoded == audioop.lin2ulaw(samples.tobytes(), 2)
    decoded = ulaw_to_pcm(encoded)
    assert decoded.tobytes() == audioop.ulaw2lin(encoded, 2)
    noise = decoded.astype(np.float64) - samples
    assert 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) / np.mean(noise**2)) > 30  # G.711's ~38 dB SNR


def test_bot_audio_for_the_phone_line_is_filtered_and_not_clipped() -> None:
    """Piper speaks at 22.05 kHz; the line carries 4 kHz. A 5 kHz tone must be removed, not fold
    back to 3 kHz (aliasing), and loud speech in band must pass without clipping."""
    resampler = StreamResampler(RATE)
    above = to_int16(np.concatenate([resampler.push(tone(5000, 22_050, 1.0, 0.9), 22_050), resampler.finish()]))
    inside = to_int16(np.concatenate([resampler.push(tone(1000, 22_050, 1.0, 0.95), 22_050), resampler.finish()]))
    rms = lambda x: float(np.sqrt(np.mean(x[400:-400].astype(np.float64) ** 2)))  # noqa: E731 - away from the edges
    assert 20 * np.log10(rms(above) / rms(inside)) < -40
    assert np.abs(inside).max() < 32767 and rms(inside) > 0.6 * 32768


async def test_the_sink_paces_frames_and_counts_a_sentence_heard_only_when_its_mark_returns() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    sink = MediaStreamSink(send, "MZ1")
    first, second = to_int16(tone(300, RATE, 0.2, 0.5)), to_int16(tone(300, RATE, 1.0, 0.5))
    sink.enqueue(first, "First sentence.")
    sink.enqueue(second, "Second sentence is longer than the first.")
    await asyncio.sleep(0)
    assert sum(m["event"] == "media" for m in sent) < (len(first) + len(second)) // FRAME_SAMPLES  # paced, not dumped
    while [m["event"] for m in sent].count("mark") < 1:
        await asyncio.sleep(0.01)
    marks = [m for m in sent if m["event"] == "mark"]
    media_before_mark = sent[: sent.index(marks[0])]
    assert sum(len(ulaw_to_pcm(base64.b64decode(m["media"]["payload"]))) for m in media_before_mark) >= len(first)
    # The carrier has not confirmed anything yet: nothing counts as heard.
    heard, cut = sink.flush()
    assert heard == [] and cut is not None and cut.startswith("First") and cut.endswith("…")
    await asyncio.sleep(0.05)
    assert sent[-1] == {"event": "clear", "streamSid": "MZ1"}
    # Again, now the carrier returns the first mark: that sentence was heard, the second was cut.
    sent.clear()
    sink.enqueue(first, "First sentence.")
    sink.enqueue(second, "Second sentence is longer than the first.")
    while not [m for m in sent if m["event"] == "mark"]:
        await asyncio.sleep(0.01)
    sink.acknowledge([m for m in sent if m["event"] == "mark"][0]["mark"]["name"])
    sink.acknowledge("a mark of audio cleared long ago")  # ignored
    await asyncio.sleep(0.1)
    heard, cut = sink.flush()
    assert heard == ["First sentence."] and cut is not None and cut.startswith("Second") and cut.endswith("…")
    frames_at_flush = sink.frames_sent
    await asyncio.sleep(0.1)
    assert sink.frames_sent == frames_at_flush and not sink.speaking  # silent after the clear
    await sink.close()


async def test_keypad_digits_end_at_hash_or_a_pause_and_zero_first_asks_for_a_human() -> None:
    typed: list[str] = []
    humans: list[bool] = []

    async def on_digits(digits: str) -> None:
        typed.append(digits)

    async def on_human() -> None:
        humans.append(True)

    keypad = Keypad(on_digits, on_human, pause_s=0.2)
    for key in "54321#":
        keypad.press(key)
    for key in "10203":  # a 0 inside a number is a digit; the pause ends it
        keypad.press(key)
    while len(typed) < 2:
        await asyncio.sleep(0.05)
    for key in "99*":  # * clears
        keypad.press(key)
    keypad.press("0")
    while not humans:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # longer than the pause: the cleared 99 is never sent
    assert typed == ["54321", "10203"] and humans == [True]
    keypad.close()


def test_stream_messages_are_validated() -> None:
    start = messages.parse('{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "customParameters": {"token": "t"},'
                           ' "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}, "extra": 1}')
    assert isinstance(start, messages.Start) and start.start.custom_parameters == {"token": "t"}
    for bad in ("not json", "[]", '{"event": "nope"}', '{"event": "media"}', '{"event": "dtmf", "dtmf": {"digit": "55"}}',
                '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": {"encoding": "audio/L16", "sampleRate": 8000}}}'):
        with pytest.raises(ValidationError):
            messages.parse(bad)
    with pytest.raises(ValueError):
        messages.parse('{"event": "media", "media": {"payload": "***"}}').media.audio()  # type: ignore[union-attr]


def test_twiml_connects_the_stream_with_the_token_and_dials_for_a_transfer() -> None:
    root = ElementTree.fromstring(connect_stream("wss://bot.example/twilio/stream", 'a"b<c'))
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://bot.example/twilio/stream"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [("token", 'a"b<c')]
    assert ElementTree.fromstring(dial("+15550199")).findtext("./Dial") == "+15550199"


def test_signatures_follow_twilios_scheme() -> None:
    # Twilio's documented example (https://www.twilio.com/docs/usage/security#validating-requests).
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234", "From": "+12349013030", "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature_valid("12345", url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("12345", url, {**params, "Digits": "1235"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("12345", url, params, None)


def test_a_stream_token_is_good_for_its_call_only() -> None:
    issuer = SessionTokenIssuer(b"x" * 40, ttl_s=900)
    token, claims = issuer.issue("default", customer={"phone": "+15550142"}, bound_to="CA1", ttl_s=30)
    assert issuer.verify(token, bound_to="CA1").customer == {"phone": "+15550142"}
    assert claims.expires_at < issuer.issue("default")[1].expires_at  # shorter-lived than a chat session's
    for elsewhere in ("CA2", None):
        with pytest.raises(AccessDenied):
            issuer.verify(token, bound_to=elsewhere)
    plain, _ = issuer.issue("default")
    with pytest.raises(AccessDenied):
        issuer.verify(plain, bound_to="CA1")
    assert issuer.verify(plain).tenant == "default"
