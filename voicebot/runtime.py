"""The bot runtime: shared engine and storage, and a pipeline per session.

Channels (websocket chat, WebRTC voice, an integrator's own) and the terminal chat all talk to
sessions through ``SessionHandle``, so every way in runs the same engine and the same storage.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from voicebot.config import ConfigError, Settings
from voicebot.dialogue.engine import DialogueEngine
from voicebot.events import BotMessage, BotReply, ErrorEvent, Event, UserText
from voicebot.pipeline import SessionPipeline, Stage, TurnContext
from voicebot.pipelines.generation.stage import GenerationStage
from voicebot.pipelines.lid.stage import TextLanguageStage
from voicebot.pipelines.nlu.stage import NluStage
from voicebot.session import Session
from voicebot.stages import DialogueStage, PersistStage, ResponseStreamStage
from voicebot.storage import Storage

if TYPE_CHECKING:
    from voicebot.pipelines.generation.seq2seq import Seq2SeqGenerator
    from voicebot.voice import VoiceServices

log = logging.getLogger(__name__)


class ResumeError(Exception):
    """The resume token is unknown (or its conversation is gone)."""


class SessionHandle:
    """One live conversation: send user text in, read bot events out."""

    def __init__(self, runtime: BotRuntime, session: Session, token: str, resumed: bool) -> None:
        self.runtime = runtime
        self.session = session
        self.token = token
        self.resumed = resumed
        self.pipeline = SessionPipeline(
            runtime.text_stages(), session, queue_size=runtime.settings.pipeline.queue_size, on_error=self._stage_failed
        )
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    @property
    def id(self) -> str:
        return self.session.id

    def start(self) -> None:
        self.pipeline.start()

    async def send_text(self, text: str, language: str | None = None, language_trace: dict[str, Any] | None = None,
                        extra_trace: dict[str, Any] | None = None) -> str:
        """Start a turn for one user message; its events arrive on ``events()``.

        A voice channel passes the language its spoken-language ID chose and what it measured
        (recognition, endpointing) for the turn's trace."""
        turn_id = secrets.token_hex(6)
        turn = self.pipeline.begin_turn(turn_id, user_text=text)
        if extra_trace:
            turn.trace.update(extra_trace)
        timeout = self.runtime.settings.pipeline.turn_timeout_s
        loop = asyncio.get_running_loop()
        self._timers[turn_id] = loop.call_later(timeout, lambda: loop.create_task(self._time_out(turn_id)))
        await self.pipeline.submit(UserText(session_id=self.id, turn_id=turn_id, text=text, language=language, language_trace=language_trace))
        return turn_id

    def cancel_turn(self, turn_id: str) -> bool:
        return self.pipeline.cancel_turn(turn_id)

    async def events(self) -> AsyncIterator[Event]:
        async for event in self.pipeline.events():
            if isinstance(event, BotMessage | ErrorEvent):
                self._finish(event.turn_id)
            yield event

    def _finish(self, turn_id: str) -> None:
        timer = self._timers.pop(turn_id, None)
        if timer:
            timer.cancel()
        self.pipeline.finish_turn(turn_id)

    async def _time_out(self, turn_id: str) -> None:
        if turn_id in self.pipeline.turns and self.pipeline.cancel_turn(turn_id):
            log.warning("session %s: turn %s timed out", self.id, turn_id)
            text, _ = self.runtime.engine.locales.message("error_internal", self.session.state.language)
            await self.pipeline.emit(ErrorEvent(session_id=self.id, turn_id=turn_id, code="turn_timeout", message=text))

    def _stage_failed(self, stage: Stage, exc: BaseException, event: Event, turn: TurnContext) -> list[Event]:
        """A failing stage still gives the customer a polite answer, and the turn is stored."""
        if isinstance(stage, PersistStage):
            return [ErrorEvent(session_id=self.id, turn_id=turn.turn_id, code="storage_failed",
                               message="Your message could not be saved. Please send it again.")]
        text, language = self.runtime.engine.locales.message("error_internal", self.session.state.language)
        turn.trace["response"] = {"path": "error", "reason": f"{stage.name} failed: {type(exc).__name__}"}
        return [BotReply(session_id=self.id, turn_id=turn.turn_id, text=text, language=language, path="error")]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        await self.pipeline.close()
        self.runtime.sessions.pop(self.id, None)
        try:
            await self.runtime.storage.end_conversation(self.id)
        except Exception:  # storage closing at shutdown must not mask the session's end
            log.exception("cannot mark session %s ended", self.id)


class BotRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.storage.data_dir
        self.storage = Storage(self.data_dir / "voicebot.sqlite")
        self.engine: DialogueEngine | None = None  # type: ignore[assignment]
        self.generator: Seq2SeqGenerator | None = None
        self.voice: VoiceServices | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.sessions: dict[str, SessionHandle] = {}
        self._swap_lock = asyncio.Lock()

    async def start(self) -> None:
        await self.storage.open()
        # Training (first start only) takes seconds of CPU: keep the loop responsive meanwhile.
        self.engine = await asyncio.to_thread(
            DialogueEngine.from_folder, self.settings.domain.path, self.settings.nlu, self.settings.language, self.data_dir
        )
        if "webrtc" in self.settings.server.channels:
            self.voice = await asyncio.to_thread(self._load_voice)
        if self.settings.generation.backend == "seq2seq":
            if not self.settings.generation.model:
                raise ConfigError("generation.model must name a seq2seq model folder or id when generation.backend = 'seq2seq'")
            self.generator = await asyncio.to_thread(self._load_generator, self.settings.generation.model)

    def _load_voice(self) -> VoiceServices:
        """VAD, recogniser and voices, loaded once for every call of the process."""
        try:
            from voicebot.pipelines.tts.router import VoiceRouter
            from voicebot.pipelines.vad.silero import SileroModel
            from voicebot.turns import TurnTakingOptions
            from voicebot.voice import VoiceServices
        except ImportError as exc:
            raise ConfigError(f"server.channels has 'webrtc' but the voice extra is missing ({exc}): pip install 'voicebot[voice]'") from None
        options = self.settings.voice
        if options.asr_backend == "openai-whisper":
            from voicebot.pipelines.asr.openai_whisper_backend import OpenAIWhisperRecognizer

            recognizer: Any = OpenAIWhisperRecognizer(options.asr_model, device=options.asr_device)
        else:
            from voicebot.pipelines.asr.faster_whisper_backend import FasterWhisperRecognizer

            recognizer = FasterWhisperRecognizer(options.asr_model, device=options.asr_device, max_batch=options.asr_max_batch)
        return VoiceServices(SileroModel(), recognizer, VoiceRouter.default(), TurnTakingOptions(**options.turns))

    def record_interruption(self, conversation_id: str, turn_id: str, delivered: str) -> None:
        """Barge-in: store what the caller actually heard of that turn's answer."""
        task = asyncio.get_running_loop().create_task(self.storage.record_interruption(conversation_id, turn_id, delivered))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _load_generator(self, model: str) -> Seq2SeqGenerator:
        from voicebot.pipelines.generation.seq2seq import Seq2SeqGenerator

        options = self.settings.generation
        generator = Seq2SeqGenerator(model, device=options.device, precision=options.precision, max_batch=options.max_batch,
                                     max_wait_s=options.max_wait_s, max_input_tokens=options.max_input_tokens)
        generator.warm_up()
        return generator

    async def swap_generator(self, model: str) -> Seq2SeqGenerator:
        """Load a new generator beside the old one, then switch: sessions are never dropped, new
        turns use the new model and turns already generating finish on the old one."""
        async with self._swap_lock:
            fresh = await asyncio.to_thread(self._load_generator, model)
            old, self.generator = self.generator, fresh
            if old is not None:
                await asyncio.to_thread(old.close)  # drains what is queued before stopping
            return fresh

    async def close(self) -> None:
        for handle in list(self.sessions.values()):
            await handle.close()
        if self.engine is not None:
            await self.engine.close()
        if self.generator is not None:
            await asyncio.to_thread(self.generator.close)
        if self.voice is not None:
            self.voice.recognizer.close()
            self.voice.voices.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.storage.close()

    def text_stages(self) -> list[Stage]:
        assert self.engine is not None
        generation = self.settings.generation
        return [
            TextLanguageStage(self.engine),
            NluStage(self.engine),
            DialogueStage(self.engine, self if generation.state_tracking else None),
            GenerationStage(self, self.engine.detector, generation),
            ResponseStreamStage(),
            PersistStage(self.storage),
        ]

    async def open_session(self, channel: str, *, resume_token: str | None = None, language: str | None = None,
                           user_id: str | None = None) -> SessionHandle:
        assert self.engine is not None
        if resume_token:
            found = await self.storage.resume(resume_token)
            if found is None:
                raise ResumeError("unknown or expired resume token")
            info, state = found
            previous = self.sessions.get(info["id"])
            if previous is not None:  # the same conversation reconnected: the old socket is stale
                await previous.close()
            session = Session(info["id"], channel, state, info["user_id"])
            handle = SessionHandle(self, session, resume_token, resumed=True)
        else:
            if user_id and not language:
                profile = await self.storage.get_profile(user_id)
                language = profile["preferred_language"] if profile else None
            state = self.engine.new_state(language)
            session = Session(Session.new_id(), channel, state, user_id)
            token = secrets.token_urlsafe(24)
            await self.storage.create_conversation(session.id, token, channel, state.language, user_id, state)
            handle = SessionHandle(self, session, token, resumed=False)
        self.sessions[session.id] = handle
        handle.start()
        return handle

    def welcome(self, handle: SessionHandle) -> dict[str, Any]:
        assert self.engine is not None
        text, language = self.engine.locales.message("welcome", handle.session.state.language)
        return {"text": text, "language": language}
