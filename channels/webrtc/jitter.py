"""The caller's audio reaches recognition one packet after it arrives, not four.

aiortc's audio receiver holds each RTP packet in a jitter buffer until four later frames have
come (``JitterBuffer(capacity=16, prefetch=4)``: 80 ms of 20 ms Opus frames), which smooths a
playout clock. The server does not play the caller's audio: it feeds it to the VAD and Whisper,
which need packets in order, not evenly spaced, and every turn waits those 80 ms before its end
can be seen. With ``prefetch`` 1 a frame is released as soon as the next packet shows it is
complete; packets still come out in sequence order (a late one behind a newer is dropped, as
before), and a lost one is skipped when the buffer's 16 slots fill, as before (the capacity, not
the prefetch, decides that). aiortc has no public setting for it, so this reaches the receiver's
private buffer, and leaves it alone (logging once) on a version that has none.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
_warned = False


def set_inbound_audio_prefetch(pc: Any, prefetch: int) -> bool:
    """Set the audio receivers' jitter-buffer prefetch of this peer connection (after the remote
    offer is set, before media flows). True when it could."""
    global _warned
    changed = False
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        buffer = getattr(transceiver.receiver, "_RTCRtpReceiver__jitter_buffer", None)
        if buffer is None or not hasattr(buffer, "_prefetch"):
            if not _warned:
                _warned = True
                log.warning("this aiortc has no audio jitter buffer to shorten; inbound audio keeps its default prefetch")
            return False
        buffer._prefetch = prefetch
        changed = True
    return changed
