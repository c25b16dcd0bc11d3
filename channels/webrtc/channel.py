"""WebRTC voice channel (aiortc): signalling endpoint, call page, one VoiceCall per peer.

POST /webrtc/offer takes the browser's SDP offer and returns the answer. The caller's microphone
track is decoded into PCM for the call (``track.CallerAudio``); the bot's voice goes back on a
paced outbound track (``track.BotAudioTrack``, the call's audio sink); a data channel named
"events" carries the call's typed events as JSON (``wire.render``), and the caller's hang-up.
ICE/DTLS failure, a peer that vanishes, or either side hanging up ends the call and frees
everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Route

from voicebot.access.limits import CallSlot
from voicebot.access.tokens import SessionClaims
from voicebot.channels.base import Channel, Goodbye, HandoffTransfer
from voicebot.channels.webrtc.jitter import set_inbound_audio_prefetch
from voicebot.channels.webrtc.track import BotAudioTrack, CallerAudio
from voicebot.channels.webrtc.wire import render
from voicebot.core.errors import Refusal
from voicebot.core.events import Event
from voicebot.core.runtime import SessionHandle
from voicebot.core.session import Session
from voicebot.resources import web_dir
from voicebot.voice.call import VoiceCall

log = logging.getLogger(__name__)


async def close_peer(pc: RTCPeerConnection) -> None:
    """Close a peer connection; aiortc's own close raises on one a bad offer left half set up
    (its SCTP transport never got a DTLS transport), which must not turn into a 500 or stop the
    other calls from closing at shutdown."""
    _retrieve_connect_errors(pc)
    try:
        await pc.close()
    except Exception as exc:  # noqa: BLE001
        log.debug("closing a half set-up peer connection: %r", exc)


def _retrieve_connect_errors(pc: RTCPeerConnection) -> None:
    """aiortc starts a background ``__connect`` task per description; on an odd offer (a data
    channel without DTLS) or a peer closed while it runs it fails on a missing transport, and
    asyncio then logs "Task exception was never retrieved" with a traceback. The tasks of this
    peer not yet finished get their outcome collected (logged at debug) instead."""
    for task in asyncio.all_tasks():
        coroutine = task.get_coro()
        frame = getattr(coroutine, "cr_frame", None)
        if getattr(coroutine, "__qualname__", "").endswith("__connect") and frame is not None and frame.f_locals.get("self") is pc:
            task.add_done_callback(_log_connect_outcome)


def _log_connect_outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("connecting a closed peer failed: %r", task.exception())


def use_loopback_candidates_only() -> None:
    """Offer only 127.0.0.1 as host candidate (tests and single-machine setups): aioice skips
    loopback by default and would offer every interface's address."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []


class Offer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sdp: str = Field(min_length=10, max_length=100_000)
    type: str = Field(pattern="^offer$")
    language: str | None = Field(None, max_length=35)
    token: str | None = Field(None, max_length=256, description="resume token of a conversation to continue")
    access_token: str | None = Field(None, max_length=4096, description="session token from POST /api/session-token")


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class WebRTCOptions(BaseModel):
    """``[channels.webrtc]``: how calls connect (env ``VOICEBOT_CHANNELS__WEBRTC__<KEY>``)."""

    model_config = ConfigDict(extra="forbid")
    ice_servers: list[str] = Field(default_factory=list, description="STUN/TURN URLs; empty: host candidates only")
    ice_loopback_only: bool = Field(False, description="offer only 127.0.0.1 (tests, callers on the same machine)")
    connect_timeout_s: float = Field(30.0, gt=0, description="an answered offer whose peer has not connected by then is ended "
                                     "(frees its call and session)")
    inbound_jitter_prefetch: int = Field(1, ge=0, le=15, description="20 ms frames the caller's audio waits in the jitter "
                                         "buffer before recognition sees it (aiortc's playout default is 4; the server "
                                         "plays nothing, so 1: channels/webrtc/jitter.py)")


class WebRTCChannel(Channel):
    name = "webrtc"
    needs_voice = True
    Options = WebRTCOptions
    options: WebRTCOptions

    def __init__(self, runtime: Any, options: WebRTCOptions | None = None) -> None:
        super().__init__(runtime, options)
        self.calls: dict[str, tuple[RTCPeerConnection, VoiceCall | None]] = {}
        self._senders: dict[str, Callable[[dict[str, Any]], None]] = {}  # each call's data channel
        self._tasks: set[asyncio.Task[Any]] = set()
        self._deadlines: set[asyncio.Task[None]] = set()
        self._slots: dict[str, CallSlot] = {}  # each call's place in voice.max_calls

    def routes(self) -> list[BaseRoute]:
        return [Route("/webrtc/offer", self.offer, methods=["POST"]), Route("/call", self.page, methods=["GET"])]

    async def page(self, request: Request) -> FileResponse:
        return FileResponse(web_dir() / "call.html", media_type="text/html")

    def _configuration(self) -> RTCConfiguration:
        if self.options.ice_loopback_only:
            use_loopback_candidates_only()
        # No public STUN server unless configured: aiortc would add one otherwise.
        servers = [RTCIceServer(urls=url) for url in self.options.ice_servers]
        return RTCConfiguration(iceServers=servers)

    async def offer(self, request: Request) -> JSONResponse:
        try:
            body = Offer.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": "invalid_offer", "message": str(exc.errors()[0]["msg"])}, status_code=400)
        try:
            claims = self.admit(body.access_token or _bearer(request), request.headers.get("origin"))
        except Refusal as refusal:
            return self.refusal_response(refusal)
        if self.runtime.voice is None:
            return JSONResponse({"error": "voice_unavailable", "message": "voice is not enabled on this server"}, status_code=503)
        try:
            slot = self.start_call()  # the process's voice.max_calls, shared with every voice channel
        except Refusal as refusal:
            return self.refusal_response(refusal)
        try:
            return await self._answer(request, body, claims, slot)
        except BaseException:
            slot.release()
            raise

    async def _answer(self, request: Request, body: Offer, claims: SessionClaims, slot: CallSlot) -> JSONResponse:
        """Answer the offer for one admitted call holding ``slot`` (released when the call ends)."""
        pc = RTCPeerConnection(self._configuration())
        inbound: list[Any] = []
        # aiortc fires "track" inside setRemoteDescription: listen before it.
        pc.on("track", lambda track: inbound.append(track) if track.kind == "audio" else None)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body.sdp, type="offer"))
            _retrieve_connect_errors(pc)  # the task it just started can fail on an odd offer
        except Exception as exc:  # noqa: BLE001 - aiortc raises many types on bad SDP
            await close_peer(pc)
            slot.release()
            return JSONResponse({"error": "invalid_sdp", "message": f"cannot use this SDP offer: {exc}"}, status_code=400)
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            await close_peer(pc)
            slot.release()
            return JSONResponse({"error": "invalid_sdp", "message": "the offer has no audio"}, status_code=400)
        set_inbound_audio_prefetch(pc, self.options.inbound_jitter_prefetch)
        try:
            handle = await self.open_session(claims, resume_token=body.token, language=body.language,
                                             client=request.client.host if request.client else None)
        except Refusal as refusal:  # limits shared with chat, an unknown resume token, a server stopping
            await close_peer(pc)
            slot.release()
            return self.refusal_response(refusal)
        bot_track = BotAudioTrack()
        channel_box: dict[str, Any] = {}
        pending: list[str] = []

        def send(payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False, default=str)
            channel = channel_box.get("channel")
            if channel is not None and channel.readyState == "open":
                channel.send(data)
            else:
                pending.append(data)

        def on_event(event: Event) -> None:
            payload = render(event)
            if payload is not None:
                send(payload)

        call = VoiceCall(self.runtime.voice, handle, bot_track, on_event)
        self.calls[handle.id] = (pc, call)
        self._slots[handle.id] = slot
        self._senders[handle.id] = send

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            channel_box["channel"] = channel

            @channel.on("open")
            def flush() -> None:
                while pending:
                    channel.send(pending.pop(0))

            @channel.on("message")
            def on_message(message: Any) -> None:
                with contextlib.suppress(ValueError, TypeError):
                    if json.loads(message).get("type") == "hangup":
                        self._keep(self.end(handle.id, "caller hung up"))

            if channel.readyState == "open":
                flush()

        for track in inbound[:1]:
            self._keep(self._listen(handle.id, track, call))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed", "disconnected"):
                await self.end(handle.id, f"connection {pc.connectionState}")

        try:
            pc.addTrack(bot_track)  # reuses the offer's audio transceiver: one sendrecv audio line
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            _retrieve_connect_errors(pc)
        except Exception as exc:  # noqa: BLE001 - an offer aiortc accepted but cannot answer
            await self.end(handle.id, f"cannot answer the offer: {exc!r}")
            return JSONResponse({"error": "invalid_sdp", "message": f"cannot answer this SDP offer: {exc}"}, status_code=400)
        # An answered offer whose peer never connects would hold its call and session forever.
        deadline = self._keep(self._connect_deadline(handle.id, pc))
        self._deadlines.add(deadline)
        deadline.add_done_callback(self._deadlines.discard)
        send({"type": "session", "session_id": handle.id, "language": handle.session.state.language})
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session_id": handle.id, "token": handle.token})

    async def _connect_deadline(self, call_id: str, pc: RTCPeerConnection) -> None:
        await asyncio.sleep(self.options.connect_timeout_s)
        entry = self.calls.get(call_id)
        if entry is not None and entry[0] is pc and pc.connectionState != "connected":
            await self.end(call_id, f"the peer did not connect within {self.options.connect_timeout_s} s")

    async def _listen(self, call_id: str, track: Any, call: VoiceCall) -> None:
        audio = CallerAudio(call)  # decoded Opus frames -> 16 kHz PCM into the call
        try:
            while True:
                audio.feed(await track.recv())
        except MediaStreamError:
            pass  # the caller's track ended
        except Exception:  # noqa: BLE001
            log.exception("call %s: audio input failed", call_id)
        await self.end(call_id, "audio ended")

    async def end(self, call_id: str, reason: str) -> None:
        entry = self.calls.pop(call_id, None)
        self._senders.pop(call_id, None)
        slot = self._slots.pop(call_id, None)
        if slot is not None:
            slot.release()
        if entry is None:
            return
        pc, call = entry
        log.info("call %s ended: %s", call_id, reason)
        if call is not None:
            await call.close()
        await close_peer(pc)

    def _keep(self, coroutine: Any) -> asyncio.Task[Any]:
        """A background task of a call, referenced until done (asyncio keeps only weak ones)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def say_goodbye(self, handle: SessionHandle, goodbye: Goodbye, deadline: float) -> None:
        """Tell the caller the service restarts (their conversation is saved), then end the call."""
        send = self._senders.get(handle.id)
        if send is not None:
            send({"type": "ended", "reason": "server_restart", "message": goodbye.text, "language": goodbye.language,
                  "resume": goodbye.resume})
            await asyncio.sleep(0.2)  # let the data channel carry it before the peer closes
        await self.end(handle.id, "server restarting")

    async def transfer_at_handoff(self, session: Session, reason: str | None) -> HandoffTransfer:
        """A browser call cannot be put through to a person: say so and store a call-back request
        for the agents' queue (the call's conversation, with the customer's profile when known)."""
        text, language = self.runtime.engines[session.tenant].locales.message("handoff_callback", session.state.language)
        return HandoffTransfer("callback", text, language)

    async def close(self) -> None:
        for task in list(self._deadlines):
            task.cancel()
        for call_id in list(self.calls):
            await self.end(call_id, "server stopping")
