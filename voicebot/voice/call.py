"""One voice call's audio pipeline, independent of the transport (WebRTC, a phone carrier, a test).

caller PCM at any rate -> 16 kHz -> VAD/endpointing -> Whisper (speculatively started at the first
pause, through the shared batcher) -> spoken-language ID -> the session's text pipeline (the same
dialogue engine and storage as chat) -> sentences -> TTS -> the sink's rate -> the ``AudioSink``.
Barge-in flushes the sink at once, cancels the turn's pending generation and speech, and records
what the caller really heard. The call's status goes out as typed events (``core.events``, "voice
call status"); the transport renders them in its own wire format.
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

from voicebot.core.events import (
    Backchannel,
    BotMessage,
    BotSpeaking,
    BotTextChunk,
    ErrorEvent,
    Event,
    FirstAudio,
    Interrupted,
    NoSpeech,
    SpeechStarted,
    UserTranscript,
)
from voicebot.core.runtime import SessionHandle
from voicebot.core.sentences import SentenceAssembler
from voicebot.pipelines.asr.base import SpeechRecognizer, Transcription
from voicebot.pipelines.asr.normalise import normalise_spoken_digits
from voicebot.pipelines.lid.spoken import decide_spoken_language
from voicebot.pipelines.vad.base import SAMPLE_RATE, VoiceActivityDetector
from voicebot.voice.audio import AudioSink, BadAudio, StreamResampler, to_int16
from voicebot.voice.turns import Endpointer, TurnEvent, TurnTakingOptions

log = logging.getLogger(__name__)

OnEvent = Callable[[Event], None]


@dataclass
class VoiceServices:
    """Models shared by every call of the process (loaded once, at start)."""

    vad: VoiceActivityDetector
    recognizer: SpeechRecognizer
    voices: Any  # pipelines.tts.router.VoiceRouter
    options: TurnTakingOptions


class VoiceCall:
    """A call: ``feed_pcm`` the caller's audio, hear the bot on ``sink``, follow it on ``on_event``."""

    def __init__(self, services: VoiceServices, handle: SessionHandle, sink: AudioSink, on_event: OnEvent) -> None:
        self.services = services
        self.handle = handle
        self.sink = sink
        self.on_event = on_event
        self.endpointer = Endpointer(services.vad.stream(), services.options)
        self.inbound = StreamResampler(SAMPLE_RATE)
        self.outbound = StreamResampler(sink.sample_rate)
        self.assembler = SentenceAssembler()
        self.current_turn: str | None = None
        self.bad_chunks = 0  # caller audio dropped as unusable
        self._speculative: asyncio.Task[Transcription] | None = None
        self._speech: asyncio.Queue[tuple[int, str, str, str]] = asyncio.Queue()
        self._epoch = 0  # bumped by barge-in: queued speech of older epochs is dropped
        self._synthesising: int | None = None  # the epoch of the sentence being synthesised
        self._sink_speaking = False
        self.speaking = False  # the bot is answering: its audio plays, or more of the answer is coming
        self._turn_marks: dict[str, dict[str, float]] = {}
        self._answer: tuple[str, list[str]] = ("", [])  # the turn being spoken, and its sentences sent to the sink
        self._tasks = [asyncio.create_task(self._bot_events()), asyncio.create_task(self._speak())]
        self._pending_turns: set[asyncio.Task[None]] = set()
        sink.on_speaking_changed.append(self._sink_speaking_changed)
        self.closed = False

    def _emit(self, kind: type[Event], turn_id: str | None = None, **fields: Any) -> None:
        self._deliver(kind(session_id=self.handle.id, turn_id=turn_id or "", **fields))

    def _deliver(self, event: Event) -> None:
        """A status event to the transport; one it fails to render must not end the call."""
        if isinstance(event, FirstAudio):
            self.handle.runtime.telemetry.first_audio(event.after_end_of_turn_ms)
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001
            log.exception("call %s: the transport failed on a %s event", self.handle.id, type(event).__name__)

    # -- caller audio --------------------------------------------------------------------------
    def feed_pcm(self, samples: np.ndarray, sample_rate: int) -> None:
        """Caller audio: int16 or float32 (in [-1, 1]), mono or (frames, channels), at any rate
        from 4 to 384 kHz, in chunks of any size. Audio that cannot be used (a rate out of range,
        not numbers) is dropped and counted rather than ending the call."""
        try:
            audio = self.inbound.push(samples, sample_rate)
        except BadAudio as exc:
            self.bad_chunks += 1
            if self.bad_chunks == 1 or self.bad_chunks % 1000 == 0:
                log.warning("call %s: dropped %d unusable audio chunk(s): %s", self.handle.id, self.bad_chunks, exc)
            return
        for event, utterance in self.endpointer.feed(audio):
            self._turn_event(event, utterance)

    def _turn_event(self, event: TurnEvent, utterance: np.ndarray | None) -> None:
        if event is TurnEvent.SPEECH_STARTED:
            self._emit(SpeechStarted)
        elif event is TurnEvent.PAUSED and utterance is not None:
            self._speculative = asyncio.create_task(self._recognise(utterance))
        elif event is TurnEvent.RESUMED:
            self._drop_speculative()
        elif event is TurnEvent.BARGE_IN:
            self.barge_in()
        elif event is TurnEvent.BACKCHANNEL:
            self._drop_speculative()
            self._emit(Backchannel)
        elif event is TurnEvent.TURN_ENDED and utterance is not None:
            task = asyncio.create_task(self._finish_turn(utterance, self._speculative, time.monotonic()))
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
            self._emit(NoSpeech, duration_s=round(len(utterance) / SAMPLE_RATE, 2))
            return
        engine = self.handle.engine
        state = self.handle.session.state
        decision = decide_spoken_language(transcription.language_probs, engine.detector.scores(text)["combined"], text,
                                          transcription.duration_s or len(utterance) / SAMPLE_RATE, state.language, engine.domain.languages,
                                          engine.language_settings)
        self._emit(UserTranscript, text=text, language=decision.language)
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
                    self._speech.put_nowait((self._epoch, event.turn_id, sentence, event.language))
            elif isinstance(event, BotMessage):
                if event.turn_id in self._turn_marks:
                    self._turn_marks[event.turn_id].setdefault("message", time.monotonic())
                for sentence in self.assembler.flush():
                    self._speech.put_nowait((self._epoch, event.turn_id, sentence, event.language))
                if event.generated_rejected:
                    # The guard rejected generated text already queued: say the grounded answer instead.
                    self.sink.flush()
                    self._epoch += 1
                    self._speech.put_nowait((self._epoch, event.turn_id, event.text, event.language))
                    self._update_speaking()
                self._deliver(event)
            elif isinstance(event, ErrorEvent):
                await self._say_now(event.message, self.handle.session.state.language)

    async def _say_now(self, text: str, language: str) -> None:
        self._speech.put_nowait((self._epoch, self.current_turn or "", text, language))

    async def _speak(self) -> None:
        while True:
            epoch, turn_id, sentence, language = await self._speech.get()
            if epoch != self._epoch:
                continue
            self._synthesising = epoch
            try:
                await self._say_sentence(epoch, turn_id, sentence, language)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one sentence failing to synthesise must not end the call
                log.warning("call %s: speech synthesis failed: %s", self.handle.id, exc)
            finally:
                self._synthesising = None
                self.outbound.finish()  # a sentence cut short leaves nothing for the next one
                self._update_speaking()

    async def _say_sentence(self, epoch: int, turn_id: str, sentence: str, language: str) -> None:
        rate = self.services.voices.sample_rate(language)
        async for chunk in self.services.voices.synthesize(sentence, language):
            if epoch != self._epoch:
                return
            marks = self._turn_marks.get(turn_id)
            if marks is not None and "first_audio" not in marks:
                marks["first_audio"] = time.monotonic()
                self._emit(FirstAudio, turn_id,
                           after_end_of_turn_ms=round((marks["first_audio"] - marks["end_of_turn"]) * 1000, 1),
                           tts_first_chunk_ms=round((marks["first_audio"] - marks.get("message", marks["first_audio"])) * 1000, 1))
            if self._answer[0] != turn_id:
                self._answer = (turn_id, [])
            if sentence not in self._answer[1]:
                self._answer[1].append(sentence)
            self.sink.enqueue(to_int16(self.outbound.push(chunk, rate)), sentence)
        if epoch == self._epoch:
            self.sink.enqueue(to_int16(self.outbound.finish()), sentence)  # the resampler's tail of the sentence

    def _sink_speaking_changed(self, speaking: bool) -> None:
        self._sink_speaking = speaking
        self._update_speaking()

    def _update_speaking(self) -> None:
        """The bot speaks from its first audio until the sink has played the last sentence queued:
        a gap while TTS catches up (a busy machine) is still the bot's turn, so the caller talking
        in it is barging in, not starting a turn of their own."""
        pending = self._synthesising == self._epoch or not self._speech.empty()
        speaking = self._sink_speaking or (self.speaking and pending)
        if speaking != self.speaking:
            self.speaking = speaking
            self.endpointer.bot_speaking = speaking
            self._emit(BotSpeaking, self.current_turn, on=speaking)

    def barge_in(self) -> None:
        """The caller talks over the bot: silence it now, cancel the turn's pending work."""
        heard, cut = self.sink.flush()
        self._epoch += 1
        while not self._speech.empty():
            self._speech.get_nowait()
        self._update_speaking()
        turn_id = self.current_turn
        cancelled = self.handle.cancel_turn(turn_id) if turn_id else False
        # The sink reports all it played since its last flush, earlier answers too: keep this turn's.
        answer = self._answer[1] if self._answer[0] == turn_id else []
        delivered = " ".join([sentence for sentence in heard if sentence in answer] + ([cut] if cut else []))
        if turn_id:
            self.handle.runtime.record_interruption(self.handle.id, turn_id, delivered)
        self._emit(Interrupted, turn_id, delivered=delivered, pipeline_cancelled=cancelled)

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
