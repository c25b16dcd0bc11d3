"""A simulated telephone carrier calling a running bot with Twilio's protocols (tests, benchmarks,
integrators checking a deployment without a phone).

``PhoneCaller`` is one call: it signs and posts the
incoming-call webhook as the carrier would, reads the TwiML, opens the media stream with the
``websockets`` client and streams the caller's line without pause, 20 ms μ-law frames in real
time (speech when the caller talks, silence otherwise, like a real line). It plays the bot's
frames on its own clock like a carrier's buffer: a ``mark`` goes back when playback reaches it,
``clear`` drops what is buffered and returns the marks pending, as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import websockets
from twilio.request_validator import RequestValidator

from voicebot.channels.twilio.codec import FRAME_SAMPLES, RATE, pcm_to_ulaw, ulaw_to_pcm

SILENCE_DBFS = -40.0
FRAME_S = FRAME_SAMPLES / RATE
ISSUED = "<the token in the TwiML>"
GAP_S = 0.25  # no bot frame for this long (it sends none when silent): the next loud one is a new onset


def dbfs(samples: np.ndarray) -> float:
    if not len(samples):
        return -120.0
    rms = float(np.sqrt(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return 20 * np.log10(max(rms, 1e-6))


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Received:
    """The bot's side of a call as the caller's carrier got it."""

    frames: list[np.ndarray] = field(default_factory=list)  # decoded 20 ms frames, in arrival order
    frame_times: list[float] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # everything but media, with "at" and "frame" (index)
    loud_starts: list[float] = field(default_factory=list)  # monotonic times bot audio turned loud

    def audio(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, dtype=np.int16)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == event]


class PhoneCaller:
    """One phone call to a running bot through the carrier's protocol."""

    def __init__(self, bot_url: str, auth_token: str, public_url: str | None = None, caller_id: str = "+15550142",
                 echo_marks: bool = True) -> None:
        self.bot_url = bot_url.rstrip("/")
        self.public_url = (public_url or bot_url).rstrip("/")
        self.auth_token = auth_token
        self.call_sid, self.account_sid, self.stream_sid = new_sid("CA"), new_sid("AC"), new_sid("MZ")
        self.caller_id = caller_id
        self.echo_marks = echo_marks
        self.received = Received()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.last_voiced_at: float | None = None
        self._line = np.zeros(0, dtype=np.int16)  # caller speech still to send
        self._line_idle = asyncio.Event()
        self._line_idle.set()
        self._playhead = 0.0  # when the carrier's buffer of bot audio runs out
        self._pending_marks: list[tuple[asyncio.TimerHandle, str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ws: Any = None
        self._was_loud = False
        self.twiml = ""
        self.issued_token = ""  # the stream token the bot's TwiML carried

    # -- the webhook -----------------------------------------------------------------------
    def webhook_params(self) -> dict[str, str]:
        return {"CallSid": self.call_sid, "AccountSid": self.account_sid, "From": self.caller_id, "To": "+15550100",
                "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}

    def sign(self, params: dict[str, str], url: str | None = None) -> str:
        return RequestValidator(self.auth_token).compute_signature(url or f"{self.public_url}/twilio/voice", params)

    async def post_webhook(self, params: dict[str, str] | None = None, signature: str | None = None) -> httpx.Response:
        params = params or self.webhook_params()
        headers = {"X-Twilio-Signature": signature if signature is not None else self.sign(params)}
        async with httpx.AsyncClient() as client:
            return await client.post(f"{self.bot_url}/twilio/voice", data=params, headers=headers, timeout=30)

    async def dial(self) -> tuple[str, str]:
        """Post the signed webhook; the stream URL and token from the TwiML answer."""
        response = await self.post_webhook()
        if response.status_code != 200:
            raise RuntimeError(f"the bot refused the call: {response.status_code} {response.text}")
        self.twiml = response.text
        stream = ElementTree.fromstring(response.text).find("./Connect/Stream")
        if stream is None:
            raise RuntimeError(f"no <Connect><Stream> in {response.text}")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        return str(stream.get("url")), str(parameters.get("token"))

    # -- the stream ------------------------------------------------------------------------
    async def connect(self, token: str | None = ISSUED) -> None:
        """Dial, then open the stream with the TwiML's token (or the given one; None: none)."""
        stream_url, issued = await self.dial()
        self.issued_token = issued
        token = issued if token == ISSUED else token
        self._ws = await websockets.connect(stream_url, max_size=None)
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {"streamSid": self.stream_sid, "accountSid": self.account_sid, "callSid": self.call_sid, "tracks": ["inbound"],
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                 "customParameters": {"token": token} if token is not None else {}}
        await self._send({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": self.stream_sid})
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._talk())]

    async def _send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        await self._ws.send(data)

    async def _talk(self) -> None:
        """The caller's line: a frame every 20 ms, speech when there is some, else silence."""
        sent, started, chunk = 0, time.monotonic(), 0
        with contextlib.suppress(websockets.ConnectionClosed):
            while not self.closed.is_set():
                frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
                take = min(FRAME_SAMPLES, len(self._line))
                frame[:take], self._line = self._line[:take], self._line[take:]
                if take and dbfs(frame) > SILENCE_DBFS:
                    self.last_voiced_at = time.monotonic()
                if not len(self._line):
                    self._line_idle.set()
                chunk += 1
                await self._send({"event": "media", "sequenceNumber": str(chunk + 1), "streamSid": self.stream_sid,
                                  "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(sent * 20),
                                            "payload": base64.b64encode(pcm_to_ulaw(frame)).decode()}})
                sent += 1
                await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.monotonic()))

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                now = time.monotonic()
                if message.get("event") == "media":
                    samples = ulaw_to_pcm(base64.b64decode(message["media"]["payload"]))
                    # The bot sends nothing between answers: a frame after a gap starts a new burst.
                    after_gap = not self.received.frame_times or now - self.received.frame_times[-1] > GAP_S
                    self.received.frames.append(samples)
                    self.received.frame_times.append(now)
                    self._playhead = max(now, self._playhead) + len(samples) / RATE
                    loud = dbfs(samples) > SILENCE_DBFS
                    if loud and (not self._was_loud or after_gap):
                        self.received.loud_starts.append(now)
                    self._was_loud = loud
                    continue
                self.received.messages.append({**message, "at": now, "frame": len(self.received.frames)})
                if message.get("event") == "mark" and self.echo_marks:
                    name = message["mark"]["name"]
                    timer = asyncio.get_running_loop().call_later(max(0.0, self._playhead - now), self._echo_mark, name)
                    self._pending_marks.append((timer, name))
                elif message.get("event") == "clear":
                    self._playhead = now
                    for timer, name in self._pending_marks:  # Twilio returns the marks of cleared audio at once
                        timer.cancel()
                        self._echo_mark(name, played=False)
                    self._pending_marks.clear()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    def _echo_mark(self, name: str, played: bool = True) -> None:
        self._pending_marks = [(t, n) for t, n in self._pending_marks if n != name]
        self.received.messages.append({"event": "mark_returned", "name": name, "played": played, "at": time.monotonic(),
                                       "frame": len(self.received.frames)})
        if not self.closed.is_set():
            asyncio.ensure_future(self._send_quietly({"event": "mark", "streamSid": self.stream_sid, "sequenceNumber": "0",
                                                      "mark": {"name": name}}))

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(message)

    # -- what a caller does ------------------------------------------------------------------
    async def say(self, samples_8k: np.ndarray) -> float:
        """Speak (int16 at 8 kHz) and wait until it has all gone out; when the last voiced frame did."""
        self._line = np.concatenate([self._line, samples_8k.astype(np.int16)])
        self._line_idle.clear()
        await self._line_idle.wait()
        return self.last_voiced_at or time.monotonic()

    async def press(self, keys: str, gap_s: float = 0.15) -> None:
        for key in keys:
            await self._send({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": "0",
                              "dtmf": {"track": "inbound_track", "digit": key}})
            await asyncio.sleep(gap_s)

    async def hang_up(self) -> None:
        """The caller hangs up: the carrier sends ``stop`` and closes the stream."""
        if self._ws is None:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send({"event": "stop", "sequenceNumber": "0", "streamSid": self.stream_sid,
                              "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
        await self._ws.close()
        self.closed.set()
        for task in self._tasks:
            task.cancel()
        for timer, _ in self._pending_marks:
            timer.cancel()

    def latency_after(self, voiced_at: float) -> float | None:
        later = [t for t in self.received.loud_starts if t > voiced_at]
        return later[0] - voiced_at if later else None

    def loud_frames_after(self, index: int) -> list[bool]:
        return [dbfs(frame) > SILENCE_DBFS for frame in self.received.frames[index:]]
