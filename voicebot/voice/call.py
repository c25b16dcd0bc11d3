"""One voice call's audio pipeline, independent of the transport (WebRTC, or a test feeding audio).

caller audio -> VAD/endpointing -> Whisper (speculatively started at the first pause, through the
shared batcher) -> spoken-language ID -> the session's text pipeline (the same dialogue engine and
storage as chat) -> sentences -> TTS -> the bot's audio track. Barge-in flushes the bot's audio at
once, cancels the turn's pending generation and speech, and records what the caller really heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicebot.voice.audio import OUT_RATE, BadAudioFrame, BotAudioTrack, Resampler, int16_to_float
from voicebot.core.events import BotMessage, BotTextChunk, ErrorEvent
from voicebot.pipelines.asr.base import SpeechRecognizer, Transcription
from voicebot.pipelines.asr.normalise import normalise_spoken_digits
from voicebot.pipelines.lid.spoken import decide_spoken_language
from voicebot.pipelines.vad.silero import SAMPLE_RATE, SileroModel
from voicebot.core.runtime import SessionHandle
from voicebot.core.sentences import SentenceAssembler
from voicebot.voice.turns import Endpointer, TurnEvent, TurnTakingOptions

log = logging.getLogger(__name__)

Notify = Callable[[dict[str, Any]], None]


@dataclass
class VoiceServices:
    """Models shared by every call of the process (loaded once, at start)."""

    vad: SileroModel
    recognizer: SpeechRecognizer
    voices: Any  # pipelines.tts.router.VoiceRouter
    options: TurnTakingOptions


class VoiceCall:
    def __init__(self, services: VoiceServices, handle: SessionHandle, track: BotAudioTrack, notify: Notify) -> None:
        self.services = services
        self.handle = handle
        self.track = track
        self.notify = notify
        self.endpointer = Endpointer(services.vad.stream(), services.options)
        self.inbound = Resampler(SAMPLE_RATE)
        self.outbound = Resampler(OUT_RATE)
        self.assembler = SentenceAssembler()
        self.current_turn: str | None = None
        self._speculative: asyncio.Task[Transcription] | None = None
        self._speech: asyncio.Queue[tuple[int, str, str, str]] = asyncio.Queue()
        self._epoch = 0  # bumped by barge-in: queued speech of older epochs is dropped
        self._turn_marks: dict[str, dict[str, float]] = {}
        self._tasks = [asyncio.create_task(self._bot_events()), asyncio.create_task(self._speak())]
        self._pending_turns: set[asyncio.Task[None]] = set()
        self.bad_frames = 0
        track.on_speaking_changed.append(self._bot_speaking_changed)
        self.closed = False

    # -- caller audio --------------------------------------------------------------------------
    def feed_frame(self, frame: Any) -> None:
        """An inbound PyAV frame (48 kHz stereo Opus decoded): resample and endpoint it. A frame
        that cannot be resampled is dropped (and counted) rather than ending the call."""
        try:
            samples = self.inbound.frame(frame)
        except BadAudioFrame as exc:
            self.bad_frames += 1
            if self.bad_frames == 1 or self.bad_frames % 1000 == 0:
                log.warning("call %s: dropped %d unusable audio frame(s): %s", self.handle.id, self.bad_frames, exc)
            return
        self.feed_pcm16k(int16_to_float(samples))

    def feed_pcm16k(self, audio: np.ndarray) -> None:
        for event, utterance in self.endpointer.feed(audio):
            if event is TurnEvent.SPEECH_STARTED:
                self.notify({"type": "speech_started"})
            elif event is TurnEvent.PAUSED and utterance is not None:
                self._speculative = asyncio.create_task(self._recognise(utterance))
            elif event is TurnEvent.RESUMED:
                self._drop_speculative()
            elif event is TurnEvent.BARGE_IN:
                self.barge_in()
            elif event is TurnEvent.BACKCHANNEL:
                self._drop_speculative()
                self.notify({"type": "backchannel"})
            elif event is TurnEvent.TURN_ENDED and utterance is not None:
                ended_at = time.monotonic()
                task = asyncio.create_task(self._finish_turn(utterance, self._speculative, ended_at))
                self._speculative = None
                self._pending_turns.add(task)
                task.add_done_callback(self._pending_turns.discard)

    def _drop_speculative(self) -> None:
        if self._speculative is not None:
            self._speculative.cancel()
            self._speculative = None

    async def _recognise(self, utterance: np.ndarray) -> Transcription:
        languages = self.handle.engine.domain.languages
        return await self.services.recognizer.transcribe(utterance, None, languages, prior_language=self.handle.session.state.language)

    async def _finish_turn(self, utterance: np.ndarray, speculative: asyncio.Task[Transcription] | None, ended_at: float) -> None:
        reused = speculative is not None and not speculative.cancelled()
        try:
            transcription = await speculative if reused and speculative else await self._recognise(utterance)
        except asyncio.CancelledError:
            transcription = await self._recognise(utterance)
            reused = False
        except Exception as exc:  # noqa: BLE001 - a failed recognition must not end the call
            log.warning("call %s: recognition failed: %s", self.handle.id, exc)
            text, language = self.handle.offer_human()
            await self._say_now(text, language)
            return
        recognised_at = time.monotonic()
        text = normalise_spoken_digits(transcription.text.strip())
        if not text:
            self.notify({"type": "no_speech", "duration_s": round(len(utterance) / SAMPLE_RATE, 2)})
            return
        engine = self.handle.engine
        state = self.handle.session.state
        decision = decide_spoken_language(transcription.language_probs, engine.detector.scores(text)["combined"], text,
                                          transcription.duration_s or len(utterance) / SAMPLE_RATE, state.language, engine.domain.languages,
                                          engine.language_settings)
        self.notify({"type": "user_transcript", "text": text, "language": decision.language})
        voice_trace = {
            "asr": {"model": transcription.model, "text": text, "language": transcription.language,
                    "language_probability": transcription.language_probability, "compute_ms": transcription.compute_ms,
                    "speculative": reused, "wait_after_end_of_turn_ms": round((recognised_at - ended_at) * 1000, 1)},
            "endpointing": {"utterance_s": round(len(utterance) / SAMPLE_RATE, 2),
                            "end_of_turn_silence_ms": self.services.options.end_of_turn_silence_ms},
        }
        turn_id = await self.handle.send_text(text, decision.language,
                                              {"reason": decision.reason, "spoken": decision.scores}, {"voice": voice_trace})
        self.current_turn = turn_id
        self._turn_marks[turn_id] = {"end_of_turn": ended_at}

    # -- bot output ----------------------------------------------------------------------------
    async def _bot_events(self) -> None:
        async for event in self.handle.events():
            if isinstance(event, BotTextChunk):
                if event.turn_id in self._turn_marks:
                    self._turn_marks[event.turn_id].setdefault("message", time.monotonic())  # first text ready
                sentences = [event.text] if event.sentence else self.assembler.feed(event.text)
                for sentence in sentences:
                    self._speech.put_nowait((self._epoch, event.turn_id, sentence, self.handle.session.state.language))
            elif isinstance(event, BotMessage):
                if event.turn_id in self._turn_marks:
                    self._turn_marks[event.turn_id].setdefault("message", time.monotonic())
                for sentence in self.assembler.flush():
                    self._speech.put_nowait((self._epoch, event.turn_id, sentence, event.language))
                if event.generated_rejected:
                    # The guard rejected generated text already queued: say the grounded answer instead.
                    self.track.flush()
                    self._epoch += 1
                    self._speech.put_nowait((self._epoch, event.turn_id, event.text, event.language))
                self.notify({"type": "bot_message", "turn_id": event.turn_id, "text": event.text, "language": event.language,
                             "handoff": event.handoff, "trace": event.trace})
            elif isinstance(event, ErrorEvent):
                await self._say_now(event.message, self.handle.session.state.language)

    async def _say_now(self, text: str, language: str) -> None:
        self._speech.put_nowait((self._epoch, self.current_turn or "", text, language))

    async def _speak(self) -> None:
        while True:
            epoch, turn_id, sentence, language = await self._speech.get()
            if epoch != self._epoch:
                continue
            try:
                rate = self.services.voices.sample_rate(language)
                async for chunk in self.services.voices.synthesize(sentence, language):
                    if epoch != self._epoch:
                        break
                    marks = self._turn_marks.get(turn_id)
                    if marks is not None and "first_audio" not in marks:
                        marks["first_audio"] = time.monotonic()
                        self.notify({"type": "first_audio", "turn_id": turn_id,
                                     "after_end_of_turn_ms": round((marks["first_audio"] - marks["end_of_turn"]) * 1000, 1),
                                     "tts_first_chunk_ms": round((marks["first_audio"] - marks.get("message", marks["first_audio"])) * 1000, 1)})
                    self.track.enqueue(self.outbound.array(chunk, rate), sentence)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one sentence failing to synthesise must not end the call
                log.warning("call %s: speech synthesis failed: %s", self.handle.id, exc)

    def _bot_speaking_changed(self, speaking: bool) -> None:
        self.endpointer.bot_speaking = speaking
        self.notify({"type": "bot_speaking", "on": speaking})

    def barge_in(self) -> None:
        """The caller talks over the bot: silence it now, cancel the turn's pending work."""
        heard, cut = self.track.flush()
        self._epoch += 1
        while not self._speech.empty():
            self._speech.get_nowait()
        turn_id = self.current_turn
        cancelled = self.handle.cancel_turn(turn_id) if turn_id else False
        delivered = " ".join(heard + ([cut] if cut else []))
        if turn_id:
            self.handle.runtime.record_interruption(self.handle.id, turn_id, delivered)
        self.notify({"type": "interrupted", "turn_id": turn_id, "delivered": delivered, "pipeline_cancelled": cancelled})

    def latency_marks(self, turn_id: str) -> dict[str, float]:
        return self._turn_marks.get(turn_id, {})

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_speculative()
        for task in list(self._pending_turns):
            task.cancel()
        # Close the session first: it drains turns in flight (they are stored) while the event
        # reader still consumes them; then stop the reader and the speaker.
        await self.handle.close()
        for task in [*self._tasks, *self._pending_turns]:
            task.cancel()
        for task in [*self._tasks, *self._pending_turns]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
