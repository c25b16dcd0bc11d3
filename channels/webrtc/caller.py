"""A command-line WebRTC caller (aiortc) for integrators testing a running bot.

It speaks a WAV file into a call, records the bot's answer, and measures voice-to-voice latency
the way a caller experiences it: from the last voiced frame it sent to the first bot frame it
received with RMS above -40 dBFS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voicebot.channels.webrtc.track import FRAME_SAMPLES_OUT, OUT_RATE, FrameResampler, PacedAudioTrack
from voicebot.voice.audio import resample

SILENCE_DBFS = -40.0


def dbfs(samples: np.ndarray) -> float:
    if not len(samples):
        return -120.0
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return 20 * np.log10(max(rms, 1e-6))


def load_wav_48k(path: Path) -> np.ndarray:
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    return resample(data.mean(axis=1).astype(np.int16), rate, OUT_RATE)


class SpeechTrack(PacedAudioTrack):
    """Plays scripted audio segments (with pauses) in paced 20 ms frames, then silence."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = np.zeros(0, dtype=np.int16)
        self.last_voiced_at: float | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    def play(self, samples_48k: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, samples_48k.astype(np.int16)])
        self.idle.clear()

    def _next_samples(self) -> np.ndarray:
        chunk = np.zeros(FRAME_SAMPLES_OUT, dtype=np.int16)
        take = min(FRAME_SAMPLES_OUT, len(self._buffer))
        chunk[:take] = self._buffer[:take]
        self._buffer = self._buffer[take:]
        if take and dbfs(chunk) > SILENCE_DBFS:
            self.last_voiced_at = time.monotonic()
        if not len(self._buffer):
            self.idle.set()
        return chunk


@dataclass
class CallRecording:
    events: list[dict[str, Any]] = field(default_factory=list)
    audio_16k: list[np.ndarray] = field(default_factory=list)  # one array per 20 ms frame received
    frames_at_event: list[int] = field(default_factory=list)  # len(audio_16k) when each event arrived
    first_loud_after: dict[float, float] = field(default_factory=dict)

    @property
    def user_transcripts(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "user_transcript"]

    @property
    def bot_messages(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "bot_message"]

    def audio(self) -> np.ndarray:
        return np.concatenate(self.audio_16k) if self.audio_16k else np.zeros(0, dtype=np.int16)


class Caller:
    """One call to a running bot: ``say`` audio, wait for answers, ``hang_up``."""

    def __init__(self, base_url: str, language: str | None = None, loopback_only: bool = False, api_key: str | None = None) -> None:
        if loopback_only:
            from voicebot.channels.webrtc.channel import use_loopback_candidates_only

            use_loopback_candidates_only()
        self.base_url = base_url.rstrip("/")
        self.language = language
        self.api_key = api_key  # an integrator's key with scope sessions:issue, when anonymous sessions are off
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = SpeechTrack()
        self.recording = CallRecording()
        self.session: dict[str, Any] = {}
        self._event_arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loud_since: float | None = None
        self.bot_audio_started: list[float] = []  # monotonic times bot audio turned loud

    async def connect(self) -> None:
        self.pc.addTrack(self.mic)
        channel = self.pc.createDataChannel("events")

        @channel.on("message")
        def on_message(message: str) -> None:
            self.recording.events.append(json.loads(message))
            self.recording.frames_at_event.append(len(self.recording.audio_16k))
            self._event_arrived.set()

        self._channel = channel

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._record(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if self.language:
            body["language"] = self.language
        async with httpx.AsyncClient() as client:
            body["access_token"] = await self._access_token(client)
            response = await client.post(f"{self.base_url}/webrtc/offer", json=body, timeout=30)
        answer = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"the bot refused the call: {answer}")
        self.session = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def _access_token(self, client: httpx.AsyncClient) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = await client.post(f"{self.base_url}/api/session-token", json={}, headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"the bot gave no session token: {response.text}")
        return str(response.json()["token"])

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = FrameResampler(16_000)
        was_loud = False
        try:
            while True:
                frame = await track.recv()
                samples = resampler.frame(frame)
                self.recording.audio_16k.append(samples)
                loud = dbfs(samples) > SILENCE_DBFS
                if loud and not was_loud:
                    self.bot_audio_started.append(time.monotonic())
                was_loud = loud
        except MediaStreamError:
            pass

    async def say(self, samples_48k: np.ndarray) -> float:
        """Speak and wait until it is all sent; return when the last voiced frame went out."""
        self.mic.play(samples_48k)
        await self.mic.idle.wait()
        return self.mic.last_voiced_at or time.monotonic()

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.recording.events if e["type"] == kind]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {count} {kind!r} event(s) in {timeout} s; got {[e['type'] for e in self.recording.events]}")
            self._event_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event_arrived.wait(), remaining)

    async def wait_quiet(self, timeout: float = 30) -> None:
        """Until the bot has stopped speaking (its last bot_speaking event is off)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            speaking = [e["on"] for e in self.recording.events if e["type"] == "bot_speaking"]
            if speaking and not speaking[-1]:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the bot kept speaking")

    def latency_after(self, speech_end: float) -> float | None:
        later = [t for t in self.bot_audio_started if t > speech_end]
        return later[0] - speech_end if later else None

    async def hang_up(self) -> None:
        with contextlib.suppress(Exception):
            if self._channel.readyState == "open":
                self._channel.send(json.dumps({"type": "hangup"}))
                await asyncio.sleep(0.1)
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


async def call_once(url: str, wav: Path, out: Path | None, language: str | None, timeout: float = 60,
                    loopback_only: bool = False, api_key: str | None = None) -> dict[str, Any]:
    caller = Caller(url, language, loopback_only=loopback_only, api_key=api_key)
    await caller.connect()
    try:
        await caller.wait_for("session", timeout=timeout)
        ended = await caller.say(load_wav_48k(wav))
        messages = await caller.wait_for("bot_message", timeout=timeout)
        await caller.wait_quiet(timeout)
        latency = caller.latency_after(ended)
    finally:
        await caller.hang_up()
    if out is not None:
        soundfile.write(str(out), caller.recording.audio(), 16_000)
    return {"you": caller.recording.user_transcripts, "bot": [m["text"] for m in messages],
            "language": messages[-1]["language"], "voice_to_voice_s": None if latency is None else round(latency, 3)}
