"""The inbound jitter-buffer setting reaches the installed aiortc: it goes through a private
attribute (channels/webrtc/jitter.py), so an aiortc upgrade that renames it must fail here rather
than silently bring back the 80 ms wait on every call turn."""

from __future__ import annotations

from aiortc import RTCPeerConnection

from voicebot.channels.webrtc.jitter import set_inbound_audio_prefetch


async def test_the_audio_receivers_buffer_takes_the_prefetch() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")  # not audio: left alone
        assert set_inbound_audio_prefetch(pc, 1)
        audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
        assert audio and all(t.receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1 for t in audio)
    finally:
        await pc.close()
