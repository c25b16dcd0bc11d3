"""The bot's voice on a carrier media stream: the call's ``AudioSink`` at 8 kHz μ-law.

Speech goes out as 20 ms ``media`` frames paced by the clock (a carrier plays what it gets and
buffers the rest: a whole answer dumped at once could not be cut short on barge-in). After each
sentence a ``mark`` follows; the carrier sends it back when its playback reaches it, so a sentence
counts as heard only when its mark returns, not when it was sent. Barge-in (``flush``) drops
the queue and sends ``clear``, which empties the carrier's buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicebot.channels.twilio import messages
from voicebot.channels.twilio.codec import FRAME_MS, FRAME_SAMPLES, RATE, pcm_to_ulaw
from voicebot.voice.audio import PlayoutQueue, cut_sentence

log = logging.getLogger(__name__)

MAX_LAG_S = 0.2  # behind the clock by more than this (a busy loop): go on from now rather than burst to catch up

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _SentSentence:
    name: str  # its mark
    text: str
    samples: int
    started_at: float  # loop time its first frame went out


class MediaStreamSink:
    """``AudioSink`` of one media stream (Twilio's protocol); ``send`` writes one JSON message."""

    sample_rate = RATE

    def __init__(self, send: Send, stream_sid: str) -> None:
        self._send = send
        self.stream_sid = stream_sid
        self.playout = PlayoutQueue(RATE)
        self.on_speaking_changed = self.playout.on_speaking_changed  # the same list: the call subscribes here
        self._unacknowledged: list[_SentSentence] = []  # marks sent, not yet back
        self._heard: list[str] = []  # sentences whose mark came back since the last flush
        self._control: list[dict[str, Any]] = []  # clear, sent before any further audio
        self._wake = asyncio.Event()
        self._since_mark = 0
        self._sentence_started: float | None = None
        self._marks = 0
        self.frames_sent = 0
        self.marks_acknowledged = 0
        self.closed = False
        self._task = asyncio.create_task(self._pace())

    # -- AudioSink ---------------------------------------------------------------------------
    @property
    def speaking(self) -> bool:
        return self.playout.speaking

    def enqueue(self, samples: np.ndarray, text: str) -> None:
        self.playout.enqueue(samples, text)
        self._wake.set()

    def flush(self) -> tuple[list[str], str | None]:
        """Barge-in: what the caller heard is what the carrier confirmed (marks back); the cut
        sentence is the first one the carrier is still playing, else the one being sent."""
        _, cut_while_sending = self.playout.flush()
        heard, cut = list(self._heard), cut_while_sending
        if self._unacknowledged:
            playing = self._unacknowledged[0]
            played = int((asyncio.get_running_loop().time() - playing.started_at) * RATE)
            cut = cut_sentence(playing.text, min(played, playing.samples), playing.samples)
        self._unacknowledged.clear()
        self._heard.clear()
        self._since_mark, self._sentence_started = 0, None
        self._control.append(messages.clear(self.stream_sid))
        self._wake.set()
        return heard, cut

    # -- carrier side --------------------------------------------------------------------------
    def acknowledge(self, name: str) -> None:
        """A mark came back: that sentence, and any before it, has been played to the caller."""
        names = [sentence.name for sentence in self._unacknowledged]
        if name not in names:
            return  # a mark of audio cleared by barge-in (the carrier returns those too)
        upto = names.index(name) + 1
        self._heard.extend(sentence.text for sentence in self._unacknowledged[:upto])
        del self._unacknowledged[:upto]
        self.marks_acknowledged += upto

    async def wait_heard(self, timeout_s: float) -> bool:
        """Until everything queued has played and its marks are back (or ``timeout_s``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self.playout.speaking or self._unacknowledged) and loop.time() < deadline and not self.closed:
            await asyncio.sleep(FRAME_MS / 1000)
        return not (self.playout.speaking or self._unacknowledged)

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        next_at: float | None = None
        try:
            while True:
                while self._control:
                    await self._send(self._control.pop(0))
                if not self.playout.speaking:
                    next_at = None
                    self._wake.clear()
                    if not self.playout.speaking and not self._control:
                        await self._wake.wait()
                    continue
                now = loop.time()
                if next_at is None or now - next_at > MAX_LAG_S:
                    next_at = now
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                    continue  # a flush may have come meanwhile
                await self._send_frame(now)
                next_at += FRAME_MS / 1000
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the socket closed under us: the channel ends the call
            log.debug("stream %s: sending stopped: %r", self.stream_sid, exc)
            self.closed = True

    async def _send_frame(self, now: float) -> None:
        before = len(self.playout.delivered)
        samples = self.playout.pull(FRAME_SAMPLES)
        finished = self.playout.delivered[before:]  # sentences whose last sample is in this frame
        if self._sentence_started is None:
            self._sentence_started = now
        self._since_mark += FRAME_SAMPLES
        self.frames_sent += 1
        await self._send(messages.media(self.stream_sid, pcm_to_ulaw(samples)))
        for text in finished:
            self._marks += 1
            sentence = _SentSentence(f"s{self._marks}", text, self._since_mark, self._sentence_started)
            self._unacknowledged.append(sentence)
            self._since_mark, self._sentence_started = 0, None
            await self._send(messages.mark(self.stream_sid, sentence.name))

    async def close(self) -> None:
        self.closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
