"""G.711 μ-law, the telephone network's audio: 8 kHz, one byte a sample, 20 ms = 160 bytes.

The codec is the standard library's ``audioop`` (C, exact G.711); it left the standard library in
Python 3.13, where the ``audioop-lts`` package (a dependency of the ``phone`` extra there) puts it
back under the same name. Resampling to and from the models' rates is not done here: a call takes
PCM at any rate (``VoiceCall.feed_pcm``) and resamples it with the project's streaming polyphase
filter, and speaks into a sink at the sink's rate (8 kHz for a phone line).
"""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.11/3.12 warn about 3.13's removal
    import audioop

RATE = 8_000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 160 samples = 160 μ-law bytes


def ulaw_to_pcm(payload: bytes) -> np.ndarray:
    """μ-law bytes -> int16 samples (one per byte)."""
    return np.frombuffer(audioop.ulaw2lin(payload, 2), dtype="<i2").astype(np.int16)


def pcm_to_ulaw(samples: np.ndarray) -> bytes:
    """int16 samples -> μ-law bytes."""
    return audioop.lin2ulaw(np.asarray(samples, dtype="<i2").tobytes(), 2)


ULAW_SILENCE = pcm_to_ulaw(np.zeros(FRAME_SAMPLES, dtype=np.int16))  # 0xFF bytes
