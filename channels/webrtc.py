"""WebRTC voice channel (aiortc): signalling endpoint, call page, one VoiceCall per peer.

POST /webrtc/offer takes the browser's SDP offer and returns the answer. The caller's microphone
track feeds the call's pipeline; the bot's voice goes back on an outbound track; a data channel
named "events" carries live transcripts, traces and hang-up. ICE/DTLS failure, a peer that
vanishes, or either side hanging up ends the call and frees everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Route

from voicebot.audio import BotAudioTrack
from voicebot.channels.base import Channel
from voicebot.resources import web_dir
from voicebot.runtime import ResumeError
from voicebot.voice import VoiceCall

log = logging.getLogger(__name__)


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
    token: str | None = Field(None, max_length=256)


class WebRTCChannel(Channel):
    name = "webrtc"

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.calls: dict[str, tuple[RTCPeerConnection, VoiceCall | None]] = {}

    def routes(self) -> list[BaseRoute]:
        return [Route("/webrtc/offer", self.offer, methods=["POST"]), Route("/call", self.page, methods=["GET"])]

    async def page(self, request: Request) -> FileResponse:
        return FileResponse(web_dir() / "call.html", media_type="text/html")

    def _configuration(self) -> RTCConfiguration:
        if self.runtime.settings.voice.ice_loopback_only:
            use_loopback_candidates_only()
        # No public STUN server unless configured: aiortc would add one otherwise.
        servers = [RTCIceServer(urls=url) for url in self.runtime.settings.voice.ice_servers]
        return RTCConfiguration(iceServers=servers)

    async def offer(self, request: Request) -> JSONResponse:
        try:
            body = Offer.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": "invalid_offer", "message": str(exc.errors()[0]["msg"])}, status_code=400)
        if self.runtime.voice is None:
            return JSONResponse({"error": "voice_unavailable", "message": "voice is not enabled on this server"}, status_code=503)
        if len(self.calls) >= self.runtime.settings.voice.max_calls:
            return JSONResponse({"error": "busy", "message": "too many calls at once; try again shortly"}, status_code=503)
        pc = RTCPeerConnection(self._configuration())
        inbound: list[Any] = []
        # aiortc fires "track" inside setRemoteDescription: listen before it.
        pc.on("track", lambda track: inbound.append(track) if track.kind == "audio" else None)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body.sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc raises many types on bad SDP
            await pc.close()
            return JSONResponse({"error": "invalid_sdp", "message": f"cannot use this SDP offer: {exc}"}, status_code=400)
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            await pc.close()
            return JSONResponse({"error": "invalid_sdp", "message": "the offer has no audio"}, status_code=400)
        try:
            handle = await self.runtime.open_session(self.name, resume_token=body.token, language=body.language)
        except ResumeError as exc:
            await pc.close()
            return JSONResponse({"error": "resume_failed", "message": str(exc)}, status_code=400)
        bot_track = BotAudioTrack()
        channel_box: dict[str, Any] = {}
        pending: list[str] = []

        def notify(payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False, default=str)
            channel = channel_box.get("channel")
            if channel is not None and channel.readyState == "open":
                channel.send(data)
            else:
                pending.append(data)

        call = VoiceCall(self.runtime.voice, handle, bot_track, notify)
        self.calls[handle.id] = (pc, call)

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
                        asyncio.ensure_future(self.end(handle.id, "caller hung up"))

            if channel.readyState == "open":
                flush()

        for track in inbound[:1]:
            asyncio.ensure_future(self._listen(handle.id, track, call))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed", "disconnected"):
                await self.end(handle.id, f"connection {pc.connectionState}")

        pc.addTrack(bot_track)  # reuses the offer's audio transceiver: one sendrecv audio line
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        notify({"type": "session", "session_id": handle.id, "language": handle.session.state.language})
        return JSONResponse({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session_id": handle.id, "token": handle.token})

    async def _listen(self, call_id: str, track: Any, call: VoiceCall) -> None:
        try:
            while True:
                frame = await track.recv()
                call.feed_frame(frame)
        except MediaStreamError:
            pass  # the caller's track ended
        except Exception:  # noqa: BLE001
            log.exception("call %s: audio input failed", call_id)
        await self.end(call_id, "audio ended")

    async def end(self, call_id: str, reason: str) -> None:
        entry = self.calls.pop(call_id, None)
        if entry is None:
            return
        pc, call = entry
        log.info("call %s ended: %s", call_id, reason)
        if call is not None:
            await call.close()
        await pc.close()

    async def close(self) -> None:
        for call_id in list(self.calls):
            await self.end(call_id, "server stopping")
