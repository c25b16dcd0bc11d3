"""The bot runtime: shared engine and storage, and a pipeline per session.

Channels (websocket chat, WebRTC voice, an integrator's own) and the terminal chat all talk to
sessions through ``SessionHandle``, so every way in runs the same engine and the same storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicebot.access.control import AccessControl
from voicebot.access.limits import CallLimiter, MessageRateLimiter, SessionLimiter
from voicebot.agents.desk import AgentDesk
from voicebot.config import ConfigError, Settings
from voicebot.coordination import ControlMessage, build_coordinator
from voicebot.core.errors import ResumeError, ShuttingDown, UnknownTenant
from voicebot.core.events import BotMessage, BotReply, ErrorEvent, Event, UserText
from voicebot.core.pipeline import SessionPipeline, Stage, TurnContext
from voicebot.core.session import HistoryEntry, Session
from voicebot.dialogue.domain import DomainError
from voicebot.dialogue.engine import DialogueEngine
from voicebot.privacy.logs import LogRedaction
from voicebot.privacy.retention import RetentionJob
from voicebot.privacy.sealing import Sealer
from voicebot.telemetry import Telemetry

if TYPE_CHECKING:
    from voicebot.core.registry import Registry
    from voicebot.storage.base import Storage
    from voicebot.voice.call import VoiceServices

StageFactory = Callable[["BotRuntime", DialogueEngine], list[Stage]]

log = logging.getLogger(__name__)


class DomainProblems(Exception):
    """A domain folder that does not load; the message lists its problems with file and line."""


DEFAULT_TENANT = "default"


def tenant_domains(settings: Settings) -> dict[str, Path]:
    """The tenants this server hosts and their domain folders; one 'default' tenant unless configured."""
    return {name: tenant.domain for name, tenant in settings.tenants.items()} or {DEFAULT_TENANT: settings.domain.path}


class SessionHandle:
    """One live conversation: send user text in, read bot events out."""

    def __init__(self, runtime: BotRuntime, session: Session, token: str, resumed: bool) -> None:
        self.runtime = runtime
        self.session = session
        self.token = token
        self.resumed = resumed
        self.engine = runtime.engines[session.tenant]  # the tenant's domain: its intents, actions and knowledge base only
        self.pipeline = SessionPipeline(
            runtime.text_stages(self.engine), session, queue_size=runtime.settings.pipeline.queue_size, on_error=self._stage_failed,
            stage_timeout_s=runtime.settings.pipeline.stage_timeout_s,
        )
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False
        self.slot: Any = None  # its place in the session limits (a coordination Slot), set by open_session
        self.claim: Any = None  # this worker serves the conversation (a coordination Claim), set by open_session
        # Why the server ended the session, for its channel to tell the client: "erased" (the
        # customer's data was erased), "moved" (another worker serves the conversation now).
        self.end_reason: str | None = None

    @property
    def id(self) -> str:
        return self.session.id

    def start(self) -> None:
        self.pipeline.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def with_agents(self) -> bool:
        """The conversation waits for or is held by a human agent: the bot does not answer."""
        return self.runtime.agents.takes_messages(self.id)

    async def count_message(self) -> None:
        """Count one message that makes the server work against the conversation's rate
        (``limits.messages_per_second``, across every worker); ``LimitExceeded("rate_limited")``
        when over it. ``send_text`` counts its own; a channel calls this for other work (a stored rating)."""
        await self.runtime.coordination.count_message(self.id)

    async def wait_idle(self, deadline: float) -> None:
        """Until every turn sent has its answer out of ``events()``, or ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        while self._timers and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def send_text(self, text: str, language: str | None = None, language_trace: dict[str, Any] | None = None,
                        extra_trace: dict[str, Any] | None = None, turn_id: str | None = None) -> str:
        """Start a turn for one user message; its events arrive on ``events()``.

        A voice channel passes the language its spoken-language ID chose and what it measured
        (recognition, endpointing) for the turn's trace. Counts toward the message rate:
        ``LimitExceeded("rate_limited")`` before anything starts when over it. ``turn_id``: one
        the channel derived from the client's message id (``turn_id_for``), else a new one."""
        await self.count_message()
        turn_id = turn_id or secrets.token_hex(6)
        if self.runtime.agents.takes_messages(self.id):  # with the agents: stored and forwarded, the bot stays silent
            await self.runtime.agents.from_customer(self, turn_id, text)
            return turn_id
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

    def turn_id_for(self, client_id: str) -> str:
        """The turn id of the client's message ``client_id`` in this conversation: the same on
        every worker and after a resume, so a message retried after a fail-over is recognised
        (its stored answer is sent again instead of a second turn)."""
        return hashlib.blake2b(f"{self.id}\x00{client_id}".encode(), digest_size=6).hexdigest()

    def in_flight(self, turn_id: str) -> bool:
        """Whether the turn was sent and its answer is not out yet."""
        return turn_id in self._timers

    async def events(self) -> AsyncIterator[Event]:
        async for event in self.pipeline.events():
            if isinstance(event, BotMessage | ErrorEvent):
                self.runtime.telemetry.turn_finished(self.pipeline.turns.get(event.turn_id), self.session.channel, event)
                self._finish(event.turn_id)
            if isinstance(event, BotMessage) and event.handoff:
                await self.runtime.agents.handed_off(self, event)  # queued before the customer can answer it
            yield event

    def _finish(self, turn_id: str) -> None:
        timer = self._timers.pop(turn_id, None)
        if timer:
            timer.cancel()
        self.pipeline.finish_turn(turn_id)

    async def _time_out(self, turn_id: str) -> None:
        if turn_id in self.pipeline.turns and self.pipeline.cancel_turn(turn_id):
            # The turn id is the trace id: the client got it in 'ack', the operator greps for it.
            log.error("session %s: turn %s timed out after %.1f s; the caller got the fallback", self.id, turn_id,
                      self.runtime.settings.pipeline.turn_timeout_s)
            text, _ = self.offer_human()
            await self.pipeline.emit(ErrorEvent(session_id=self.id, turn_id=turn_id, code="turn_timeout", message=text))

    def _stage_failed(self, stage: Stage, exc: BaseException, event: Event, turn: TurnContext) -> list[Event]:
        """A failing stage still gives the customer a polite answer in their language, offering a
        human (a "yes" next accepts), and the turn is stored under its own index."""
        state = self.session.state
        if stage.name == "storage":  # PersistStage: the turn is not stored, so say so rather than offer a human
            text, _ = self.engine.locales.message("error_storage", state.language)
            log.error("session %s: turn %s could not be stored (%s: %s)", self.id, turn.turn_id, type(exc).__name__, exc)
            return [ErrorEvent(session_id=self.id, turn_id=turn.turn_id, code="storage_failed", message=text)]
        text, language = self.offer_human()
        # A failure after the dialogue: its reply says under which index (and intent) the turn is stored.
        reply = event if isinstance(event, BotReply) and event.turn_index is not None else None
        if reply is None:
            # The dialogue never finished this turn: without its own index it would be stored over
            # the previous turn (turns are keyed by index). A gap is harmless; an overwrite is not.
            state.turn_count += 1
            turn.trace["turn"] = state.turn_count
            state.history.append(HistoryEntry(turn.user_text, text, None, language))
        elif state.history and state.history[-1].user == turn.user_text:
            state.history[-1].bot = text  # what the customer really got
        turn.trace["response"] = {"path": "error", "reason": f"{stage.name} failed: {type(exc).__name__}", "key": "error_internal",
                                  "language": language, "handoff_offered": True}
        return [BotReply(session_id=self.id, turn_id=turn.turn_id, text=text, language=language, path="error",
                         intent=reply.intent if reply else None, turn_index=reply.turn_index if reply else state.turn_count)]

    def offer_human(self) -> tuple[str, str]:
        """The apology that offers a human agent; a pending confirmation is dropped (the customer
        never heard that question, and their "yes" now answers the offer)."""
        state = self.session.state
        state.handoff_offered = True
        state.awaiting_confirmation = None
        return self.engine.locales.message("error_internal", state.language)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        try:
            await self.pipeline.close()
        finally:
            self.runtime.sessions.pop(self.id, None)
            if self.slot is not None:
                self.slot.release()  # after the drain: the slot stands for the work the session holds
            if self.claim is not None:
                self.claim.release()  # its last turn is stored: another worker may serve the conversation now
            self.runtime.coordination.forget_messages(self.id)
        try:
            await self.runtime.agents.session_ended(self)
        except Exception:  # the desk must not keep a session from ending
            log.exception("agents' desk: cannot note the end of session %s", self.id)
        try:
            await self.runtime.storage.end_conversation(self.id)
        except Exception:  # storage closing at shutdown must not mask the session's end
            log.exception("cannot mark session %s ended", self.id)


class BotRuntime:
    """The shared parts of one process: storage, the tenants' dialogue engines, the generator,
    the voice services, limits; and the sessions. Which backend serves each part is chosen by
    config through ``registry``; which stages a text turn runs through, by ``text_stages``. Both
    default to the built-in composition (voicebot.plugins, voicebot.composition)."""

    def __init__(self, settings: Settings, *, registry: Registry | None = None, text_stages: StageFactory | None = None) -> None:
        if registry is None or text_stages is None:
            from voicebot import composition, plugins

            registry = registry or plugins.default_registry()
            text_stages = text_stages or composition.text_stages
        self.settings = settings
        self.registry = registry
        self._text_stages = text_stages
        self.data_dir = settings.storage.data_dir
        # Stored text is redacted and encrypted (privacy.*); a bad key setting fails here, clearly.
        self.storage: Storage = registry.create("storage", settings.storage.backend, settings.storage.backend_options(), "storage",
                                                data_dir=self.data_dir, sealer=Sealer.from_settings(settings.privacy, self.data_dir))
        # Kept by retention: this process's sessions and the conversations other workers serve (their locks).
        self.retention = RetentionJob(self.storage, settings.privacy, lambda: list(self.sessions),
                                      held=lambda: self.coordination.held_conversations())
        self._log_redaction: LogRedaction | None = None
        self.draining = False  # set at SIGTERM: no new sessions
        self.access = AccessControl(settings, list(tenant_domains(settings)), self.data_dir)
        self.engines: dict[str, DialogueEngine] = {}
        self.generator: Any = None  # a pipelines.generation.base.Generator, or None: templates only
        self.voice: VoiceServices | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.sessions: dict[str, SessionHandle] = {}
        self.session_limiter = SessionLimiter.from_settings(settings.limits)
        self.message_rate = MessageRateLimiter.from_settings(settings.limits)  # per session id; SessionHandle.send_text counts
        self.calls = CallLimiter(settings.voice.max_calls)  # shared by every voice channel (Channel.start_call)
        self.channels: dict[str, Any] = {}  # name -> Channel, filled by load_channels (the desk asks them at a hand-off)
        self.agents = AgentDesk(self)  # human agents: the hand-off queue, the consoles (voicebot.agents)
        # Who serves which conversation, the limits across workers, control messages (voicebot.coordination);
        # in memory (the two limiters above and the access control's token count) unless Redis is configured.
        self.coordination = build_coordinator(settings, self.session_limiter, self.message_rate, self.access.count_token_request)
        self.on_shutdown_request: Callable[[], None] | None = None  # set by the server: a 'shutdown' control message stops it
        self._swap_lock = asyncio.Lock()
        self.telemetry = Telemetry(self, settings)  # metrics (GET /metrics) and, when enabled, tracing spans

    async def start(self) -> None:
        await self.storage.open()
        if self.settings.privacy.redact_stored:  # handlers exist by now (uvicorn configures its own first)
            self._log_redaction = LogRedaction(self.storage.sealer.patterns.everything).install()
        # Training (first start only) takes seconds of CPU: keep the loop responsive meanwhile.
        for tenant, folder in tenant_domains(self.settings).items():
            self.engines[tenant] = await asyncio.to_thread(self._load_engine, tenant, folder)
        if self.needs_voice:
            self.voice = await asyncio.to_thread(self._load_voice)
        if self.settings.generation.backend != "none":
            self.generator = await asyncio.to_thread(self._load_generator, self.settings.generation.backend_options())
        await self.coordination.start(self._on_control, self._on_conversation_lost)
        self.retention.start()
        self.telemetry.start()

    @property
    def engine(self) -> DialogueEngine:
        """The first tenant's engine (the only one unless tenants are configured)."""
        return next(iter(self.engines.values()))

    def _load_engine(self, tenant: str, folder: Path) -> DialogueEngine:
        # The default tenant keeps the data dir's top level, where single-tenant servers kept their models.
        data_dir = self.data_dir if tenant == DEFAULT_TENANT else self.data_dir / "tenants" / tenant
        return DialogueEngine.from_folder(folder, self.settings.nlu, self.settings.language, data_dir, registry=self.registry)

    async def reload_domain(self, tenant: str) -> DialogueEngine:
        """Load the tenant's domain folder again and serve it to new sessions, here and on every
        other worker (a control message); sessions already open finish on the engine they started
        with, which is closed once the last one ends."""
        fresh = await self._reload_domain_here(tenant)
        try:
            await self.coordination.broadcast(ControlMessage("reload_domain", {"tenant": tenant}, origin=self.coordination.worker_id))
        except Exception:  # reloaded here; the others reload at their next start
            log.exception("domain %s reloaded here but not announced to the other workers", tenant)
        return fresh

    async def _reload_domain_here(self, tenant: str) -> DialogueEngine:
        try:
            fresh = await asyncio.to_thread(self._load_engine, tenant, tenant_domains(self.settings)[tenant])
        except DomainError as exc:
            raise DomainProblems(str(exc)) from None
        old, self.engines[tenant] = self.engines[tenant], fresh
        self._spawn(self._retire_engine(old))
        return fresh

    async def _retire_engine(self, engine: DialogueEngine) -> None:
        while any(handle.engine is engine for handle in self.sessions.values()):
            await asyncio.sleep(1.0)
        await engine.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def needs_voice(self) -> bool:
        """Whether any configured channel declares it needs VAD, ASR and TTS (``Channel.needs_voice``)."""
        channels = (self.registry.resolve("channel", name, "server.channels") for name in self.settings.server.channels)
        return any(getattr(cls, "needs_voice", False) for cls in channels)

    def _load_voice(self) -> VoiceServices:
        """VAD, recogniser and voices ([vad], [asr], [tts]), loaded once for every call of the process."""
        try:
            from voicebot.voice.call import VoiceServices
            from voicebot.voice.turns import TurnTakingOptions
        except ImportError as exc:
            raise ConfigError(f"a configured channel needs voice but the voice extra is missing ({exc}): pip install 'voicebot[voice]'") from None
        settings = self.settings
        vad = self.registry.create("vad", settings.vad.backend, settings.vad.backend_options(), "vad", registry=self.registry)
        recognizer = self.registry.create("asr", settings.asr.backend, settings.asr.backend_options(), "asr", registry=self.registry)
        voices = self.registry.create("tts", settings.tts.backend, settings.tts.backend_options(), "tts", registry=self.registry)
        return VoiceServices(vad, recognizer, voices, TurnTakingOptions(**settings.voice.turns))

    async def erase_customer(self, user_id: str, tenant: str | None = None, *, actor: str = "api") -> dict[str, Any]:
        """Right to erasure: end the customer's live sessions (of ``tenant`` when given) on every
        worker and wait until their last turns are stored, then delete everything stored about
        them (``Storage.erase_customer``: counts, audit id). ``CoordinationUnavailable`` when the
        other workers cannot be told: nothing is deleted then (a live session elsewhere would
        store its next turn after the deletion)."""
        message = ControlMessage("end_customer_sessions", {"user_id": user_id, "tenant": tenant}, origin=self.coordination.worker_id)
        await self.coordination.broadcast(message, wait_s=self.settings.server.shutdown_grace_s + 5)
        return await self.storage.erase_customer(user_id, tenant, actor=actor)

    async def _end_customer_sessions(self, user_id: str, tenant: str | None) -> None:
        handles = [handle for handle in self.sessions.values() if handle.session.user_id == user_id and tenant in (None, handle.session.tenant)]
        for handle in handles:
            handle.end_reason = "erased"
        await asyncio.gather(*(handle.close() for handle in handles))

    async def _on_control(self, message: ControlMessage) -> None:
        """A control message from any worker (this one included)."""
        payload = message.payload
        if message.kind == "end_customer_sessions":
            await self._end_customer_sessions(str(payload["user_id"]), payload.get("tenant"))
        elif message.kind == "reload_domain":
            if message.origin != self.coordination.worker_id and payload.get("tenant") in self.engines:
                log.info("reloading domain %s (asked by worker %s)", payload["tenant"], message.origin)
                await self._reload_domain_here(str(payload["tenant"]))
        elif message.kind == "shutdown":
            log.info("shutdown asked by %s", message.origin or "an operator")
            if self.on_shutdown_request is not None:
                self.on_shutdown_request()
        else:
            log.warning("unknown control message %r ignored", message.kind)

    async def _on_conversation_lost(self, conversation_id: str) -> None:
        """Another worker serves the conversation now (this one's lock lapsed): end it here."""
        handle = self.sessions.get(conversation_id)
        if handle is not None:
            handle.claim = None  # not ours to release
            handle.end_reason = "moved"
            await handle.close()

    def record_interruption(self, conversation_id: str, turn_id: str, delivered: str) -> None:
        """Barge-in: store what the caller actually heard of that turn's answer."""
        self._spawn(self.storage.record_interruption(conversation_id, turn_id, delivered))

    def _load_generator(self, options: dict[str, Any]) -> Any:
        generator = self.registry.create("generator", self.settings.generation.backend, options, "generation", registry=self.registry)
        warm_up = getattr(generator, "warm_up", None)
        if warm_up is not None:
            warm_up()
        return generator

    async def swap_generator(self, model: str) -> Any:
        """Load a new generator beside the old one, then switch: sessions are never dropped, new
        turns use the new model and turns already generating finish on the old one."""
        async with self._swap_lock:
            options = {**self.settings.generation.backend_options(), "model": model}
            fresh = await asyncio.to_thread(self._load_generator, options)
            old, self.generator = self.generator, fresh
            if old is not None:
                await asyncio.to_thread(old.close)  # drains what is queued before stopping
            return fresh

    async def close(self) -> None:
        await self.retention.stop()
        for handle in list(self.sessions.values()):
            await handle.close()
        for engine in self.engines.values():
            await engine.close()
        if self.generator is not None:
            await asyncio.to_thread(self.generator.close)
        if self.voice is not None:
            self.voice.recognizer.close()
            self.voice.voices.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.coordination.close()
        await self.storage.close()
        self.telemetry.close()
        if self._log_redaction is not None:
            self._log_redaction.remove()

    def text_stages(self, engine: DialogueEngine) -> list[Stage]:
        return self._text_stages(self, engine)

    async def open_session(self, channel: str, *, resume_token: str | None = None, language: str | None = None,
                           user_id: str | None = None, tenant: str | None = None, client: str | None = None,
                           customer: dict[str, str] | None = None) -> SessionHandle:
        """Start or resume a conversation of ``tenant`` (default: the first); a resume token of
        another tenant's conversation is refused like an unknown one. ``customer`` is an identity
        the integrator's backend verified (a session token's claim): the customer need not prove
        who they are before the bot shows their orders.

        ``client`` (the peer's address) counts toward ``limits.sessions_per_client``; beyond a
        limit ``LimitExceeded`` is raised before anything is created or stored. The session's
        slot is released by ``SessionHandle.close``, or here when opening fails."""
        if self.draining:
            raise ShuttingDown("the server is restarting; reconnect in a moment")
        tenant = tenant or next(iter(self.engines))
        if tenant not in self.engines:
            raise UnknownTenant(f"this server hosts no tenant {tenant!r}")
        engine = self.engines[tenant]
        slot: Any = None
        claim: Any = None
        coordination = self.coordination
        try:
            if resume_token:
                found = await self.storage.resume(resume_token)
                if found is None or found[0]["tenant"] != tenant:
                    raise ResumeError("unknown or expired resume token")
                info, state = found
                previous = self.sessions.get(info["id"])
                if previous is not None:  # the same conversation reconnected here: the old socket is stale
                    await previous.close()  # first, so its slot (and its lock) is free for the new connection
                claim = await coordination.claim_conversation(info["id"])  # ConversationInUse: another worker serves it
                if coordination.shared:  # the worker that served it until now may have stored a turn since the read
                    found = await self.storage.resume(resume_token)
                    if found is None:
                        raise ResumeError("unknown or expired resume token")
                    info, state = found
                slot = await coordination.admit_session(client)
                session = Session(info["id"], channel, state, info["user_id"], tenant)
                handle = SessionHandle(self, session, resume_token, resumed=True)
            else:
                slot = await coordination.admit_session(client)
                if user_id and not language:
                    profile = await self.storage.get_profile(user_id)
                    language = profile["preferred_language"] if profile else None
                state = engine.new_state(language, identity=customer)
                session = Session(Session.new_id(), channel, state, user_id, tenant)
                token = secrets.token_urlsafe(24)
                claim = await coordination.claim_conversation(session.id)
                await self.storage.create_conversation(session.id, token, channel, state.language, user_id, state, tenant=tenant)
                handle = SessionHandle(self, session, token, resumed=False)
        except BaseException:
            if slot is not None:
                slot.release()
            if claim is not None:
                claim.release()
            raise
        handle.slot = slot
        handle.claim = claim
        self.sessions[session.id] = handle
        handle.start()
        if handle.resumed:
            await self.agents.attach(handle)  # back in the agents' queue if it waited there
        return handle

    def welcome(self, handle: SessionHandle) -> dict[str, Any]:
        text, language = handle.engine.locales.message("welcome", handle.session.state.language)
        return {"text": text, "language": language}
