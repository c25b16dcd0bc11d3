"""One call's recognitions: at most one on the model at a time, a speculative one reused when the
caller did not go on.

The call starts recognising at the first pause, in case the turn is ending. CTranslate2 cannot
stop a forward pass once it runs, so a speculative recognition thrown away because the caller went
on still holds the model until it ends, and on a small machine the recognition that ends the turn
queues behind work nobody will use. So a call keeps at most one recognition of its own on the
model: a speculative one still queued when the caller goes on is withdrawn (no work lost); one
already running is left to finish, unused, and no other speculative one starts for this call
until it has; a pause that came meanwhile gets its speculative recognition as soon as the model
is free, if the caller is still silent. The recognition that ends the turn never waits for a
speculative one to be allowed: it is submitted at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicebot.pipelines.asr.base import RecognitionProgress, Transcription


@dataclass(eq=False)
class Recognition:
    """One recognition of this call: its task, its progress on the model, and what it heard."""

    task: asyncio.Task[Transcription]
    progress: RecognitionProgress
    speculative: bool
    samples: int  # utterance length it was given (16 kHz samples)
    language: str | None  # the language it was forced to decode in, None when detected
    discarded_in: TurnRecognition | None = None  # the turn that threw it away, to charge its CPU to


@dataclass
class TurnRecognition:
    """What recognition did during one turn, for the trace and the latency breakdown."""

    speculative_started: int = 0
    speculative_withdrawn: int = 0  # cancelled while still queued: nothing computed
    speculative_discarded: int = 0  # thrown away once the model had started on it
    discarded_cpu_s: float = 0.0  # process CPU of the discarded ones that finished
    speculative_reused: bool = False
    final: Recognition | None = None
    details: dict[str, Any] = field(default_factory=dict)


class CallRecognitions:
    """Schedules one call's recognitions (see the module docstring). ``recognise`` runs one on the
    shared recogniser; ``utterance_if_paused`` gives the utterance when the caller is still
    silent in a pause, else None; ``on_speculative`` hears each speculative result that is still
    valid (the caller has not gone on), so the endpointer can decide from the words."""

    def __init__(self, recognise: Callable[[np.ndarray, RecognitionProgress, bool], tuple[Awaitable[Transcription], str | None]],
                 utterance_if_paused: Callable[[], np.ndarray | None],
                 on_speculative: Callable[[Transcription], None] | None = None) -> None:
        self._recognise = recognise
        self._utterance_if_paused = utterance_if_paused
        self.on_speculative = on_speculative
        self.current: Recognition | None = None  # the speculative recognition of the pause going on
        self._on_model: set[Recognition] = set()  # this call's recognitions queued or running
        self._pause_waiting = False  # a pause came while the model was busy with this call's work
        self.turn = TurnRecognition()

    @property
    def busy(self) -> bool:
        return bool(self._on_model)

    @property
    def words_pending(self) -> bool:
        """The pause going on will get a transcript: its speculative recognition runs or waits for the model."""
        return self._pause_waiting or (self.current is not None and not self.current.task.done())

    def _start(self, utterance: np.ndarray, speculative: bool) -> Recognition:
        progress = RecognitionProgress(submitted_at=time.monotonic())
        awaitable, language = self._recognise(utterance, progress, speculative)
        recognition = Recognition(asyncio.ensure_future(awaitable), progress, speculative, len(utterance), language)
        self._on_model.add(recognition)
        recognition.task.add_done_callback(lambda _task: self._done(recognition))
        return recognition

    def _done(self, recognition: Recognition) -> None:
        self._on_model.discard(recognition)
        if recognition is self.current and self.on_speculative is not None and not recognition.task.cancelled() \
                and recognition.task.exception() is None:
            self.on_speculative(recognition.task.result())
        if recognition.discarded_in is not None and recognition.progress.started_at is not None:
            recognition.discarded_in.discarded_cpu_s += recognition.progress.process_cpu_s
        if self._pause_waiting and not self._on_model:
            self._pause_waiting = False
            utterance = self._utterance_if_paused()
            if utterance is not None and self.current is None:
                self._start_speculative(utterance)

    def _start_speculative(self, utterance: np.ndarray) -> None:
        self.turn.speculative_started += 1
        self.current = self._start(utterance, speculative=True)

    def paused(self, utterance: np.ndarray) -> None:
        """The caller paused long enough to start recognising speculatively."""
        if self.current is not None:
            return
        if self._on_model:  # never two of this call's recognitions on the model
            self._pause_waiting = True
            return
        self._start_speculative(utterance)

    def resumed(self) -> None:
        """The caller went on (or it was a backchannel): the speculative result is of no use."""
        self._pause_waiting = False
        recognition, self.current = self.current, None
        if recognition is None:
            return
        if recognition.progress.started_at is None and not recognition.task.done():
            recognition.task.cancel()  # still queued: withdraw it, the model never sees it
            self.turn.speculative_withdrawn += 1
        else:
            self.turn.speculative_discarded += 1  # it runs (or ran) to its end; its result is dropped
            if recognition.task.done():
                self.turn.discarded_cpu_s += recognition.progress.process_cpu_s
            else:
                recognition.discarded_in = self.turn

    async def final(self, utterance: np.ndarray) -> tuple[Transcription, Recognition, TurnRecognition]:
        """The turn's transcript: the speculative one when the caller stayed silent since it
        started (the utterance only gained silence), else a recognition of the whole utterance."""
        self._pause_waiting = False
        speculative, self.current = self.current, None
        turn, self.turn = self.turn, TurnRecognition()
        if speculative is not None:
            try:
                transcription = await speculative.task
            except asyncio.CancelledError:
                if not speculative.task.cancelled():
                    raise  # the call itself is being cancelled
            else:
                turn.speculative_reused, turn.final = True, speculative
                return transcription, speculative, turn
        recognition = self._start(utterance, speculative=False)
        turn.final = recognition
        return await recognition.task, recognition, turn

    def close(self) -> None:
        self._pause_waiting = False
        for recognition in list(self._on_model):
            recognition.task.cancel()
        self.current = None
