"""Phone calls from the telephone network through a carrier's media stream (Twilio's protocol).

``POST /twilio/voice`` is the carrier's incoming-call webhook: its signature is checked
(``webhook``), and the answer is TwiML that connects the call to ``/twilio/stream`` with a
short-lived token bound to the call. On the stream (``messages``) the caller's 8 kHz μ-law goes
into a ``VoiceCall`` (which resamples it for the models), the bot's voice comes back through a
``MediaStreamSink`` (paced frames, marks, clear on barge-in), keypad digits go to the dialogue
(``keypad``). At goodbye the bot hangs up, at a hand-off it transfers the call, both through the
carrier's REST API (``carrier``). The same dialogue, storage, limits and traces as every channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicebot.access.limits import CallSlot
from voicebot.channels.base import Channel, Goodbye, HandoffTransfer
from voicebot.channels.twilio import messages
from voicebot.channels.twilio.carrier import CarrierClient, CarrierError
from voicebot.channels.twilio.codec import RATE, ulaw_to_pcm
from voicebot.channels.twilio.keypad import Keypad
from voicebot.channels.twilio.sink import MediaStreamSink
from voicebot.channels.twilio.webhook import SIGNATURE_HEADER, IncomingCall, connect_stream, reject, signature_valid
from voicebot.core.errors import Refusal
from voicebot.core.events import BotMessage, BotSpeaking, Event
from voicebot.core.runtime import SessionHandle
from voicebot.core.session import Session
from voicebot.voice.audio import resample
from voicebot.voice.call import VoiceCall
from voicebot.voice.turns import TurnTakingOptions

log = logging.getLogger(__name__)

VOICE_PATH, STREAM_PATH = "/twilio/voice", "/twilio/stream"
POLICY_VIOLATION, TOO_BIG, TRY_AGAIN_LATER = 1008, 1009, 1013  # websocket close codes


class TwilioOptions(BaseModel):
    """``[channels.twilio]`` (env ``VOICEBOT_CHANNELS__TWILIO__<KEY>``); docs/phone.md explains each."""

    model_config = ConfigDict(extra="forbid")
    auth_token: SecretStr = Field(description="the account's auth token: checks webhook signatures, authenticates REST calls")
    public_url: AnyHttpUrl = Field(description="https base URL the carrier calls (signatures cover it; the stream URL is "
                                               "derived from it, https -> wss)")
    api_base_url: str = Field("https://api.twilio.com", description="the carrier's REST API (hang up, transfer)")
    transfer_number: str | None = Field(None, pattern=r"^\+?[0-9]{3,20}$|^sip:.+$",
                                        description="where a hand-off transfers the call; unset: the bot only says a human will follow up")
    trust_caller_id: bool = Field(False, description="offer the caller's number (From) to the identification gate; caller "
                                                     "ID can be forged, see docs/security.md")
    tenant: str | None = Field(None, description="the tenant whose bot answers (default: the first)")
    language: str | None = Field(None, max_length=35, description="the language a call starts in (default: the domain's)")
    stream_token_ttl_s: int = Field(60, ge=5, le=900, description="the carrier must open the stream within this time")
    start_timeout_s: float = Field(10.0, gt=0, description="a stream with no valid 'start' by then is closed")
    keypad_pause_s: float = Field(3.0, gt=0, description="typed digits go to the dialogue after this pause (or at '#')")
    max_frame_bytes: int = Field(65_536, ge=1024, description="a stream message above this closes the stream (1009)")
    max_bad_messages: int = Field(50, ge=1, description="invalid messages on one stream before it is closed (1008)")
    hangup_timeout_s: float = Field(30.0, gt=0, description="longest wait for the goodbye to be heard before hanging up")
    turns: dict[str, float] = Field(default_factory=dict, description="endpointing and barge-in for phone calls, over "
                                    "voice.turns (phone lines are noisier and echo: e.g. barge_in_min_speech_ms)")


@dataclass
class PhoneCall:
    """One live carrier call."""

    call_sid: str
    account_sid: str
    stream_sid: str
    websocket: WebSocket
    handle: SessionHandle
    sink: MediaStreamSink
    slot: CallSlot
    voice: VoiceCall | None = None
    keypad: Keypad | None = None
    ending: bool = False
    bad_messages: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    spoken_turns: set[str] = field(default_factory=set)  # turns whose answer the bot has finished speaking
    spoke: asyncio.Event = field(default_factory=asyncio.Event)  # set at each end of speaking


class TwilioChannel(Channel):
    name = "twilio"
    needs_voice = True
    Options = TwilioOptions
    options: TwilioOptions

    def __init__(self, runtime: Any, options: TwilioOptions | None = None) -> None:
        super().__init__(runtime, options)
        self.calls: dict[str, PhoneCall] = {}  # by session id
        self.carrier = CarrierClient(self.options.api_base_url, self.options.auth_token.get_secret_value())

    def routes(self) -> list[BaseRoute]:
        return [Route(VOICE_PATH, self.incoming_call, methods=["POST"]), WebSocketRoute(STREAM_PATH, self.stream)]

    def _public(self, path: str) -> str:
        return str(self.options.public_url).rstrip("/") + path

    def stream_url(self) -> str:
        base = self._public(STREAM_PATH)
        return "wss://" + base.removeprefix("https://") if base.startswith("https://") else "ws://" + base.removeprefix("http://")

    # -- the webhook ---------------------------------------------------------------------------
    async def incoming_call(self, request: Request) -> Response:
        form = await request.form()
        params = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        url = self._public(VOICE_PATH) + (f"?{request.url.query}" if request.url.query else "")
        if not signature_valid(self.options.auth_token.get_secret_value(), url, params, request.headers.get(SIGNATURE_HEADER)):
            log.warning("incoming call refused: bad or missing %s", SIGNATURE_HEADER)
            return PlainTextResponse("invalid signature", status_code=403)
        try:
            call = IncomingCall.model_validate(params)
        except ValidationError as exc:
            return PlainTextResponse(f"not an incoming call: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", status_code=400)
        if self.runtime.voice is None or self.runtime.draining or self.runtime.calls.active >= self.runtime.calls.max_calls:
            return Response(reject("busy"), media_type="application/xml")  # the caller hears a busy tone
        tenant = self.options.tenant or self.runtime.access.default_tenant()
        customer = {"phone": call.caller} if self.options.trust_caller_id and call.caller else None
        token, _ = self.runtime.access.tokens.issue(tenant, customer=customer, language=self.options.language,
                                                    bound_to=call.call_sid, ttl_s=self.options.stream_token_ttl_s)
        log.info("incoming call %s: connecting its media stream", call.call_sid)
        return Response(connect_stream(self.stream_url(), token), media_type="application/xml")

    # -- the media stream ------------------------------------------------------------------------
    async def stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            start = await asyncio.wait_for(self._start_message(websocket), self.options.start_timeout_s)
        except TimeoutError:
            await _close(websocket, POLICY_VIOLATION, "no valid start message")
            return
        except WebSocketDisconnect:
            return
        if start is None:
            return
        info = start.start
        try:
            claims = self.runtime.access.admit(info.custom_parameters.get("token"), None, bound_to=info.call_sid)
        except Refusal as refusal:
            log.warning("media stream of call %s refused: %s", info.call_sid, refusal)
            await _close(websocket, POLICY_VIOLATION, "invalid stream token")
            return
        try:
            slot = self.start_call()
        except Refusal:
            await _close(websocket, TRY_AGAIN_LATER, "too many calls")
            return
        try:
            handle = await self.open_session(claims, language=claims.language)
        except Refusal as refusal:
            slot.release()
            await _close(websocket, TRY_AGAIN_LATER, refusal.code)
            return
        call = PhoneCall(info.call_sid, info.account_sid, info.stream_sid, websocket, handle,
                         MediaStreamSink(lambda payload: websocket.send_text(json.dumps(payload)), info.stream_sid), slot)
        self.calls[handle.id] = call
        call.voice = VoiceCall(self._services(), handle, call.sink, lambda event: self._on_event(call, event))
        call.keypad = Keypad(lambda digits: self._typed(call, digits), lambda: self._ask_for_human(call), self.options.keypad_pause_s)
        log.info("call %s: stream %s open, session %s", info.call_sid, info.stream_sid, handle.id)
        try:
            await self._receive(call)
        finally:
            await self.end(call, "stream ended")

    async def _start_message(self, websocket: WebSocket) -> messages.Start | None:
        """Messages until ``start`` (``connected`` comes first); None if the stream is closed for
        sending garbage first."""
        bad = 0
        while True:
            text = await self._next_text(websocket)
            if text is None:
                return None
            try:
                message = messages.parse(text)
            except ValidationError:
                bad += 1
                if bad >= self.options.max_bad_messages:
                    await _close(websocket, POLICY_VIOLATION, "not a media stream")
                    return None
                continue
            if isinstance(message, messages.Start):
                return message

    async def _next_text(self, websocket: WebSocket) -> str | None:
        """The next message's text; None (after closing with 1009) for one over ``max_frame_bytes``."""
        received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(received.get("code", 1000))
        text = received.get("text")
        if text is None:
            text = (received.get("bytes") or b"").decode("utf-8", errors="replace")
        if len(text) > self.options.max_frame_bytes:
            await _close(websocket, TOO_BIG, f"messages are limited to {self.options.max_frame_bytes} bytes")
            return None
        return text

    async def _receive(self, call: PhoneCall) -> None:
        assert call.voice is not None and call.keypad is not None
        while not call.ending:
            try:
                text = await self._next_text(call.websocket)
            except WebSocketDisconnect:
                return
            if text is None:
                return
            try:
                message = messages.parse(text)
                if isinstance(message, messages.Media):
                    call.voice.feed_pcm(ulaw_to_pcm(message.media.audio()), RATE)
                elif isinstance(message, messages.Mark):
                    call.sink.acknowledge(message.mark.name)
                elif isinstance(message, messages.Dtmf):
                    if call.voice.speaking:
                        call.voice.barge_in()  # a key pressed over the bot interrupts it like speech
                    call.keypad.press(message.dtmf.digit)
                elif isinstance(message, messages.Stop):
                    log.info("call %s: the carrier stopped the stream (the caller hung up)", call.call_sid)
                    return
            except (ValidationError, ValueError) as exc:
                call.bad_messages += 1
                if call.bad_messages == 1:
                    log.warning("call %s: dropped an invalid stream message: %s", call.call_sid, str(exc).splitlines()[0])
                if call.bad_messages >= self.options.max_bad_messages:
                    await _close(call.websocket, POLICY_VIOLATION, "too many invalid messages")
                    return

    def _services(self) -> Any:
        """The process's voice models with this channel's turn-taking settings over voice.turns."""
        services = self.runtime.voice
        if not self.options.turns:
            return services
        merged = {**services.options.model_dump(), **self.options.turns}
        return replace(services, options=TurnTakingOptions(**merged))

    async def transfer_at_handoff(self, session: Session, reason: str | None) -> HandoffTransfer:
        """A phone line is put through to a person (``transfer_number``) once the caller has heard
        that it is; without a number, a call-back request is stored for the agents' queue, as on
        WebRTC. Either way the caller is not told to wait for a chat reply that cannot reach a call."""
        locales = self.runtime.engines[session.tenant].locales
        if self.options.transfer_number:
            text, language = locales.message("handoff_transfer", session.state.language)
            return HandoffTransfer("transferred", text, language)
        text, language = locales.message("handoff_callback", session.state.language)
        return HandoffTransfer("callback", text, language)

    # -- what the dialogue decides --------------------------------------------------------------
    def _on_event(self, call: PhoneCall, event: Event) -> None:
        if isinstance(event, BotSpeaking) and not event.on and event.turn_id:
            call.spoken_turns.add(event.turn_id)
            call.spoke.set()
        elif isinstance(event, BotMessage):
            if event.handoff and self.options.transfer_number:
                self._keep(call, self._after_answer(call, event.turn_id, "transfer"))
            elif event.intent == "goodbye":
                self._keep(call, self._after_answer(call, event.turn_id, "hang_up"))

    async def _after_answer(self, call: PhoneCall, turn_id: str, action: str) -> None:
        """Let the caller hear the turn's answer (it may have been spoken before its message
        came, or not have started yet), then hang up or transfer through the carrier's API."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.hangup_timeout_s
        while turn_id not in call.spoken_turns and loop.time() < deadline:
            call.spoke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.spoke.wait(), max(0.01, deadline - loop.time()))
        await call.sink.wait_heard(max(1.0, deadline - loop.time()))
        try:
            if action == "transfer":
                assert self.options.transfer_number
                await self.carrier.transfer(call.account_sid, call.call_sid, self.options.transfer_number)
                log.info("call %s: transferred to a human", call.call_sid)
            else:
                await self.carrier.hang_up(call.account_sid, call.call_sid)
                log.info("call %s: the bot hung up after goodbye", call.call_sid)
        except CarrierError as exc:
            # Closing the stream still ends the call: the TwiML has no verb after <Connect>.
            log.error("call %s: %s failed (%s); closing the stream instead", call.call_sid, action, exc)
        await self.end(call, action)

    async def _typed(self, call: PhoneCall, digits: str) -> None:
        """Digits typed on the keypad, as the caller's message: they fill the slot being asked."""
        await self._send(call, digits, {"keypad": {"digits": len(digits)}})

    async def _ask_for_human(self, call: PhoneCall) -> None:
        """``0``: the caller asks for a human, in the words the domain's hand-off intent is trained on."""
        engine, state = call.handle.engine, call.handle.session.state
        intents = [name for name, spec in engine.domain.spec.intents.items() if spec.kind == "handoff"]
        for language in (state.language, *engine.domain.languages):
            examples = engine.domain.examples.get(language, {})
            text = next((examples[name][0] for name in intents if examples.get(name)), None)
            if text:
                await self._send(call, text, {"keypad": {"digits": 1, "meaning": "human"}}, language)
                return
        log.warning("call %s: '0' pressed but the domain has no hand-off intent", call.call_sid)

    async def _send(self, call: PhoneCall, text: str, trace: dict[str, Any], language: str | None = None) -> None:
        assert call.voice is not None
        try:
            call.voice.current_turn = await call.handle.send_text(text, language or call.handle.session.state.language,
                                                                  {"reason": "keypad"}, trace)
        except Refusal as refusal:
            log.warning("call %s: keypad input refused: %s", call.call_sid, refusal)

    # -- ending ----------------------------------------------------------------------------------
    def _keep(self, call: PhoneCall, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)

    async def end(self, call: PhoneCall, reason: str) -> None:
        """Free everything of a call (twice is harmless): its session (turns in flight are stored
        first), its call slot, its sender, the socket."""
        if self.calls.pop(call.handle.id, None) is None:
            return
        call.ending = True
        log.info("call %s ended: %s", call.call_sid, reason)
        if call.keypad is not None:
            call.keypad.close()
        try:
            if call.voice is not None:
                await call.voice.close()
            else:
                await call.handle.close()
        finally:
            call.slot.release()
            await call.sink.close()
            await _close(call.websocket, 1000, reason)
            current = asyncio.current_task()
            for task in list(call.tasks):
                if task is not current:
                    task.cancel()

    async def say_goodbye(self, handle: SessionHandle, goodbye: Goodbye, deadline: float) -> None:
        """Server restarting: the caller hears the goodbye, then the bot hangs up."""
        call = self.calls.get(handle.id)
        if call is None:
            await handle.close()
            return
        voices = self.runtime.voice.voices
        loop = asyncio.get_running_loop()
        try:
            async for chunk in voices.synthesize(goodbye.text, goodbye.language):
                call.sink.enqueue(resample(chunk, voices.sample_rate(goodbye.language), RATE), goodbye.text)
            await call.sink.wait_heard(max(0.0, deadline - loop.time() - 1.0))
            await asyncio.wait_for(self.carrier.hang_up(call.account_sid, call.call_sid), max(0.5, deadline - loop.time()))
        except Exception as exc:  # noqa: BLE001 - the stream closing ends the call anyway
            log.warning("call %s: goodbye at shutdown incomplete: %r", call.call_sid, exc)
        await self.end(call, "server restarting")

    async def close(self) -> None:
        for call in list(self.calls.values()):
            await self.end(call, "server stopping")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.CONNECTED and websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(code, reason[:120])
