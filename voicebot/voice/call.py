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
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
    TurnLatency,
    UserTranscript,
)
from voicebot.core.runtime import SessionHandle
from voicebot.core.sentences import SentenceAssembler, first_clause_split
from voicebot.pipelines.asr.base import RecognitionProgress, SpeechRecognizer, Transcription
from voicebot.pipelines.asr.normalise import normalise_spoken_digits
from voicebot.pipelines.lid.spoken import SpokenLanguageDecision, decide_spoken_language
from voicebot.pipelines.vad.base import SAMPLE_RATE, VoiceActivityDetector
from voicebot.voice.audio import AudioSink, BadAudio, StreamResampler, leading_silence, to_int16
from voicebot.voice.endpointing import Completeness, end_of_turn_silence_ms
from voicebot.voice.preemptive import ReplyPreview, first_clause_of_reply
from voicebot.voice.recognition import CallRecognitions, Recognition, TurnRecognition
from voicebot.voice.turns import Endpointer, TurnEvent, TurnTakingOptions

log = logging.getLogger(__name__)

OnEvent = Callable[[Event], None]


@dataclass
class InboundCost:
    """Wall time the call spends on the caller's audio (resampling, VAD and endpointing), for the
    latency breakdown: these run on the event loop, in the path of every frame."""

    seconds_of_audio: float = 0.0
    resample_s: float = 0.0
    vad_s: float = 0.0

    def add(self, samples: int, resample_s: float, vad_s: float) -> None:
        self.seconds_of_audio += samples / SAMPLE_RATE
        self.resample_s += resample_s
        self.vad_s += vad_s

    def per_20ms_frame_ms(self) -> dict[str, float]:
        frames = max(self.seconds_of_audio / 0.02, 1.0)
        return {"resample_ms": round(self.resample_s * 1000 / frames, 3), "vad_ms": round(self.vad_s * 1000 / frames, 3)}


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
        self.inbound_cost = InboundCost()
        self.recognitions = CallRecognitions(self._start_recognition, self._utterance_if_paused, self._speculative_heard)
        self.endpointer.words_pending = lambda: self.recognitions.words_pending
        self._takes_progress = _accepts(services.recognizer, "progress")
        self._takes_context = _accepts(services.recognizer, "context")
        self._same_language_turns = 0  # turns in a row in the call's current language
        self._spoken_turn: str | None = None  # the turn whose answer the speaker has started
        self._speech: asyncio.Queue[tuple[int, str, str, str]] = asyncio.Queue()
        self._epoch = 0  # bumped by barge-in: queued speech of older epochs is dropped
        self._synthesising: int | None = None  # the epoch of the sentence being synthesised
        self._sink_speaking = False
        self.speaking = False  # the bot is answering: its audio plays, or more of the answer is coming
        self._turn_marks: dict[str, dict[str, float]] = {}
        self._turn_details: dict[str, dict[str, Any]] = {}  # per turn: recognition and endpointing, for TurnLatency
        self._endpointing: dict[str, Any] = {}  # how the pause going on will end: set from its speculative words
        self._answer: tuple[str, list[str]] = ("", [])  # the turn being spoken, and its sentences sent to the sink
        self._preview: ReplyPreview | None = None  # the reply's first clause, prepared in the pause going on
        self._tasks = [asyncio.create_task(self._bot_events()), asyncio.create_task(self._speak())]
        self._pending_turns: set[asyncio.Task[None]] = set()
        sink.on_speaking_changed.append(self._sink_speaking_changed)
        playback_started = getattr(sink, "on_playback_started", None)  # optional: sinks that pull frames on their own clock
        self._sink_reports_playback = isinstance(playback_started, list)
        if self._sink_reports_playback:
            playback_started.append(self._playback_started)
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
        started = time.perf_counter()
        try:
            audio = self.inbound.push(samples, sample_rate)
        except BadAudio as exc:
            self.bad_chunks += 1
            if self.bad_chunks == 1 or self.bad_chunks % 1000 == 0:
                log.warning("call %s: dropped %d unusable audio chunk(s): %s", self.handle.id, self.bad_chunks, exc)
            return
        resampled = time.perf_counter()
        events = self.endpointer.feed(audio)
        self.inbound_cost.add(len(audio), resampled - started, time.perf_counter() - resampled)
        for event, utterance in events:
            self._turn_event(event, utterance)

    def _turn_event(self, event: TurnEvent, utterance: np.ndarray | None) -> None:
        if event is TurnEvent.SPEECH_STARTED:
            self._emit(SpeechStarted)
        elif event is TurnEvent.PAUSED and utterance is not None:
            self.recognitions.paused(utterance)
        elif event is TurnEvent.RESUMED:
            self.recognitions.resumed()
            self._drop_preview()
        elif event is TurnEvent.BARGE_IN:
            self.barge_in()
        elif event is TurnEvent.BACKCHANNEL:
            self.recognitions.resumed()
            self._drop_preview()
            self._emit(Backchannel)
        elif event is TurnEvent.TURN_ENDED and utterance is not None:
            marks = {"sound_seen": self.endpointer.last_sound_seen_at, "speech_seen": self.endpointer.last_speech_seen_at,
                     "end_of_turn": time.monotonic()}
            task = asyncio.create_task(self._finish_turn(utterance, marks, self._endpointing))
            self._endpointing: dict[str, Any] = {}  # how the pause going on will end: set from its speculative words
            self._pending_turns.add(task)
            task.add_done_callback(self._pending_turns.discard)

    def _utterance_if_paused(self) -> np.ndarray | None:
        return self.endpointer.utterance if self.endpointer.in_pause() else None

    def _speculative_heard(self, transcription: Transcription) -> None:
        """The words of a pause still going on set how much more silence ends the turn."""
        silence_ms, judged = end_of_turn_silence_ms(normalise_spoken_digits(transcription.text.strip()), self.services.options)
        self._endpointing = {"words": judged.value, "end_of_turn_silence_ms": silence_ms,
                             "silence_at_words_ms": self.endpointer.silence_ms}
        for event, utterance in self.endpointer.set_end_of_turn_silence(silence_ms):
            self._turn_event(event, utterance)
        if self.endpointer.in_pause() and judged is not Completeness.INCOMPLETE:
            self._start_preview(transcription)

    def _start_preview(self, transcription: Transcription) -> None:
        """The turn has not ended on these words yet: prepare the reply's first clause meanwhile.
        Not while the bot speaks (the caller's words are a barge-in or a backchannel), and not
        when the words say more is coming (a preview then is mostly wasted CPU)."""
        text = normalise_spoken_digits(transcription.text.strip())
        if not self.services.options.preemptive_reply or self.speaking or not text:
            return
        self._drop_preview()
        duration_s = transcription.duration_s or len(self.endpointer.utterance) / SAMPLE_RATE
        language = self._spoken_language(transcription, text, duration_s).language
        self._preview = ReplyPreview(first_clause_of_reply(self.handle, text, language), self._synthesize_all)

    async def _synthesize_all(self, text: str, language: str) -> list[np.ndarray]:
        return [chunk async for chunk in self.services.voices.synthesize(text, language)]

    def _drop_preview(self) -> None:
        if self._preview is not None:
            self._preview.cancel()
            self._preview = None

    def _spoken_language(self, transcription: Transcription, text: str, duration_s: float) -> SpokenLanguageDecision:
        """The language of what the caller said, from Whisper's audio scores and the words (pipelines.lid.spoken)."""
        engine = self.handle.engine
        return decide_spoken_language(transcription.language_probs, engine.detector.scores(text)["combined"], text, duration_s,
                                      self.handle.session.state.language, engine.domain.languages, engine.language_settings)

    def _language_settled(self) -> bool:
        """Whisper's language detection cannot change the call's language: decode in it."""
        if len(self.handle.engine.domain.languages) == 1:
            return True
        settle_after = self.services.options.settled_language_turns
        return bool(settle_after) and self._same_language_turns >= settle_after

    def _start_recognition(self, utterance: np.ndarray, progress: RecognitionProgress,
                           speculative: bool) -> tuple[Awaitable[Transcription], str | None]:
        languages = self.handle.engine.domain.languages
        current = self.handle.session.state.language
        forced = current if self._language_settled() else None
        extra: dict[str, Any] = {"progress": progress} if self._takes_progress else {}
        if self._takes_context and self.handle.engine.domain.spec.speech_context:
            extra["context"] = self.handle.engine.domain.spec.speech_context
        return self.services.recognizer.transcribe(utterance, forced, languages, prior_language=current, **extra), forced

    async def _finish_turn(self, utterance: np.ndarray, marks: dict[str, float], endpointing: dict[str, Any]) -> None:
        try:
            transcription, recognition, turn = await self.recognitions.final(utterance)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed recognition must not end the call
            log.warning("call %s: recognition failed: %s", self.handle.id, exc)
            text, language = self.handle.offer_human()
            await self._say_now(text, language)
            return
        marks["recognised"] = time.monotonic()
        text = normalise_spoken_digits(transcription.text.strip())
        if not text:
            self._emit(NoSpeech, duration_s=round(len(utterance) / SAMPLE_RATE, 2))
            return
        engine = self.handle.engine
        state = self.handle.session.state
        decision = self._spoken_language(transcription, text, transcription.duration_s or len(utterance) / SAMPLE_RATE)
        self._same_language_turns = self._same_language_turns + 1 if decision.language == state.language else 0
        self._emit(UserTranscript, text=text, language=decision.language)
        asr = _recognition_trace(transcription, recognition, turn, marks)
        voice_trace = {
            "asr": {"model": transcription.model, "text": text, "language": transcription.language,
                    "language_probability": transcription.language_probability, **asr,
                    "speech_context": bool(self._takes_context and engine.domain.spec.speech_context.get(transcription.language))},
            "endpointing": {"utterance_s": round(len(utterance) / SAMPLE_RATE, 2),
                            "end_of_turn_silence_ms": endpointing.get("end_of_turn_silence_ms", self.services.options.end_of_turn_silence_ms),
                            "words": endpointing.get("words", "unknown")},
        }
        turn_id = await self.handle.send_text(text, decision.language,
                                              {"reason": decision.reason, "spoken": decision.scores}, {"voice": voice_trace})
        self.current_turn = turn_id
        self._turn_marks[turn_id] = marks
        self._turn_details[turn_id] = {"asr": asr, "endpointing": voice_trace["endpointing"]}

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
                # The answer's first sentence goes out clause by clause: the caller hears its
                # first words after synthesising a few of them, not the whole sentence.
                first = turn_id != self._spoken_turn
                self._spoken_turn = turn_id
                preview, self._preview = (self._preview, None) if first else (None, self._preview)
                for part in first_clause_split(sentence) if first else [sentence]:
                    if epoch != self._epoch:
                        break
                    await self._say_sentence(epoch, turn_id, part, language, preview)
                    preview = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one sentence failing to synthesise must not end the call
                log.warning("call %s: speech synthesis failed: %s", self.handle.id, exc)
            finally:
                self._synthesising = None
                self.outbound.finish()  # a sentence cut short leaves nothing for the next one
                self._update_speaking()

    async def _say_sentence(self, epoch: int, turn_id: str, sentence: str, language: str, preview: ReplyPreview | None = None) -> None:
        rate = self.services.voices.sample_rate(language)
        async for chunk in self._sentence_audio(turn_id, sentence, language, preview):
            if epoch != self._epoch:
                return
            marks = self._turn_marks.get(turn_id)
            if marks is not None and "first_audio" not in marks:
                marks["first_audio"] = time.monotonic()
                # The synthesiser's own leading silence only delays the answer: cut it (a few ms kept).
                lead = leading_silence(chunk, rate)
                chunk = chunk[lead:]
                self._turn_details.setdefault(turn_id, {})["leading_silence_trimmed_ms"] = round(lead * 1000 / rate, 1)
                self._emit(FirstAudio, turn_id,
                           after_end_of_turn_ms=round((marks["first_audio"] - marks["end_of_turn"]) * 1000, 1),
                           tts_first_chunk_ms=round((marks["first_audio"] - marks.get("message", marks["first_audio"])) * 1000, 1))
                if not self._sink_reports_playback:
                    self._emit_latency(turn_id)
            if self._answer[0] != turn_id:
                self._answer = (turn_id, [])
            if sentence not in self._answer[1]:
                self._answer[1].append(sentence)
            self.sink.enqueue(to_int16(self.outbound.push(chunk, rate)), sentence)
        if epoch == self._epoch:
            self.sink.enqueue(to_int16(self.outbound.finish()), sentence)  # the resampler's tail of the sentence

    async def _sentence_audio(self, turn_id: str, sentence: str, language: str, preview: ReplyPreview | None) -> AsyncIterator[np.ndarray]:
        """The sentence's speech: the preview's, if it prepared this very clause, else synthesised now."""
        prepared = await preview.audio_for(sentence, language) if preview is not None else None
        if preview is not None:
            self._turn_details.setdefault(turn_id, {})["first_clause_prepared"] = prepared is not None
        if prepared is not None:
            for chunk in prepared:
                yield chunk
            return
        async for chunk in self.services.voices.synthesize(sentence, language):
            yield chunk

    def _playback_started(self) -> None:
        """The sink handed the first frame of a burst of speech to its transport."""
        turn_id = self._answer[0]
        marks = self._turn_marks.get(turn_id)
        if marks is not None and "first_audio" in marks and "first_frame_out" not in marks:
            marks["first_frame_out"] = time.monotonic()
            self._emit_latency(turn_id)

    def _emit_latency(self, turn_id: str) -> None:
        marks = self._turn_marks.get(turn_id, {})
        details = {**self._turn_details.pop(turn_id, {}), "inbound_per_frame": self.inbound_cost.per_20ms_frame_ms()}
        self._emit(TurnLatency, turn_id, marks={k: round(v, 4) for k, v in marks.items()}, hops_ms=latency_hops(marks), details=details)

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
        self._drop_preview()
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
        """``time.monotonic()`` of each step of a turn (speech_seen, end_of_turn, asr_*, recognised,
        message, first_audio, first_frame_out where the sink reports it)."""
        return self._turn_marks.get(turn_id, {})

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.recognitions.close()
        self._drop_preview()
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


def _accepts(recognizer: SpeechRecognizer, keyword: str) -> bool:
    """Backends of this package take ``progress=`` and ``context=``; a third-party one may only know the protocol."""
    parameters = inspect.signature(recognizer.transcribe).parameters
    return keyword in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _recognition_trace(transcription: Transcription, recognition: Recognition, turn: TurnRecognition,
                       marks: dict[str, float]) -> dict[str, Any]:
    """What recognition cost this turn, in wall time and in CPU time (which holds on a loaded machine)."""
    progress = recognition.progress
    if progress.started_at is not None:
        marks["asr_submitted"], marks["asr_started"] = progress.submitted_at, progress.started_at
    if progress.finished_at is not None:
        marks["asr_finished"] = progress.finished_at
    queued, compute = progress.queued_s, progress.compute_s
    return {
        "compute_ms": transcription.compute_ms,
        "speculative": turn.speculative_reused,
        "language_detection": recognition.language is None,
        "wait_after_end_of_turn_ms": round((marks["recognised"] - marks["end_of_turn"]) * 1000, 1),
        "queued_ms": None if queued is None else round(queued * 1000, 1),
        "model_ms": None if compute is None else round(compute * 1000, 1),
        "thread_cpu_ms": round(progress.thread_cpu_s * 1000, 1),
        "process_cpu_ms": round(progress.process_cpu_s * 1000, 1),
        "batch_size": progress.batch_size,
        "speculative_started": turn.speculative_started,
        "speculative_withdrawn": turn.speculative_withdrawn,
        "speculative_discarded": turn.speculative_discarded,
        "discarded_process_cpu_ms": round(turn.discarded_cpu_s * 1000, 1),
    }


def latency_hops(marks: dict[str, float]) -> dict[str, float]:
    """The server's share of voice-to-voice, hop by hop (ms), from a turn's marks."""
    hops = [("vad_hangover", "sound_seen", "speech_seen"), ("endpointing", "speech_seen", "end_of_turn"), ("asr_after_end_of_turn", "end_of_turn", "recognised"),
            ("dialogue", "recognised", "message"), ("tts_first_chunk", "message", "first_audio"),
            ("to_first_frame_out", "first_audio", "first_frame_out"), ("server_total", "sound_seen", "first_frame_out")]
    return {name: round((marks[end] - marks[start]) * 1000, 1) for name, start, end in hops if start in marks and end in marks}
