"""Silero VAD (weights ship in the silero-vad wheel), one shared ONNX session for every call.

Implements the VAD contract of ``voicebot.pipelines.vad.base`` (``VoiceActivityDetector`` /
``VadStream``). The model is stateful per audio stream; the state is two small arrays, so each
call keeps its own ``SileroStream`` while all calls share the loaded network: no per-call model
loading.
"""

from __future__ import annotations

import threading
from importlib import resources

import numpy as np

from voicebot.pipelines.vad.base import FRAME_SAMPLES, SAMPLE_RATE

__all__ = ["FRAME_SAMPLES", "SAMPLE_RATE", "SileroModel", "SileroStream"]

_CONTEXT = 64


class SileroModel:
    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        path = resources.files("silero_vad") / "data" / "silero_vad.onnx"
        self._session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()
        self.name = "silero-vad (onnx)"

    def stream(self) -> SileroStream:
        return SileroStream(self)

    def _run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        with self._lock:
            probability, new_state = self._session.run(
                None, {"input": window[None, :], "state": state, "sr": np.array(SAMPLE_RATE, dtype=np.int64)}
            )
        return float(probability[0][0]), new_state


class SileroStream:
    """Speech probability per 32 ms frame of one audio stream."""

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def probability(self, frame: np.ndarray) -> float:
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"Silero needs frames of {FRAME_SAMPLES} samples at 16 kHz, got {frame.shape}")
        frame = np.nan_to_num(frame.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0).clip(-1.0, 1.0)
        window = np.concatenate([self._context, frame])
        probability, self._state = self._model._run(window, self._state)
        self._context = window[-_CONTEXT:]
        return probability
