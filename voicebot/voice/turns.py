"""Turn-taking: when the caller starts and stops talking, and when they interrupt the bot.

All settings live in one typed options object with documented defaults (after LiveKit Agents'
turn-handling options). The endpointer turns 32 ms VAD frames into turn events; it starts
recognition speculatively as soon as the caller pauses, so by the time the pause is long enough to
end the turn, the transcript is (almost) ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicebot.pipelines.vad.base import FRAME_SAMPLES, SAMPLE_RATE, VadStream

FRAME_MS = FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 32
_SOUND_RMS = 0.01  # -40 dBFS: the level a caller's own meter calls sound (for the latency marks only)


class TurnTakingOptions(BaseModel):
    """Endpointing and interruption settings (config section ``voice.turns``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speech_start_threshold: float = Field(0.5, ge=0, le=1, description="VAD probability that counts a frame as speech")
    speech_stop_threshold: float = Field(0.35, ge=0, le=1, description="below this a frame is silence (hysteresis)")
    min_speech_ms: int = Field(160, ge=0, description="speech shorter than this is noise, not a turn")
    end_of_turn_silence_ms: int = Field(800, ge=100, description="silence that ends the caller's turn when its words do not say "
                                        "more: longer than a pause mid-sentence (0.5 s of silence inserted between words measures "
                                        "~0.7 s, with the voice's own trailing and leading silence)")
    complete_turn_silence_ms: int = Field(608, ge=100, description="silence that ends a turn whose words so far are a complete "
                                          "question (the speculative transcript); longer than a 0.3 s pause before the caller's next "
                                          "sentence ('Can you help me? [0.3 s] My parcel never came.': 416 ms answered 3 of 6 such "
                                          "turns twice, 608 none; bench/voice_latency.py --set sentences)")
    incomplete_turn_silence_ms: int = Field(1200, ge=100, description="silence needed when the words so far cannot end a turn: "
                                            "a number being read out ('my number is 1 2 3'), a trailing 'and', 'the', 'um'")
    speculative_after_ms: int = Field(96, ge=0, description="silence after which recognition starts early, in case the turn is "
                                      "ending; a call never has two recognitions on the model, so a pause that turns out to be "
                                      "mid-sentence wastes at most one")
    settled_language_turns: int = Field(0, ge=0, description="after this many turns in one language, decode in it without "
                                        "Whisper's language detection (0: detect on every turn, so a caller may switch at any "
                                        "turn); a one-language domain never detects")
    preemptive_reply: bool = Field(True, description="once a pause's words are heard and the turn has not ended yet, decide the "
                                   "reply on a copy of the state and synthesise its first clause, used only if the turn's reply opens "
                                   "with that very clause (voicebot.voice.preemptive)")
    max_utterance_s: float = Field(20.0, gt=0, description="a turn is cut here even if the caller keeps talking")
    barge_in_min_speech_ms: int = Field(600, ge=0, description="speech over the bot this long interrupts it; 'mm', 'ok' are shorter")
    pre_speech_ms: int = Field(480, ge=0, description="audio kept from before speech started: soft onsets, VAD flicker at the first syllable")


class TurnEvent(Enum):
    SPEECH_STARTED = "speech_started"
    PAUSED = "paused"          # a pause long enough to start recognising speculatively
    RESUMED = "resumed"        # the caller went on: drop the speculative result
    BARGE_IN = "barge_in"      # sustained speech while the bot talks
    TURN_ENDED = "turn_ended"  # the utterance is complete
    BACKCHANNEL = "backchannel"  # short speech over the bot ("mm", "ok"): neither a turn nor a barge-in


@dataclass
class Endpointer:
    """Per-call turn detection over 16 kHz float32 audio."""

    vad: VadStream
    options: TurnTakingOptions = field(default_factory=TurnTakingOptions)
    bot_speaking: bool = False
    _pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    _history: list[np.ndarray] = field(default_factory=list)
    _utterance: list[np.ndarray] = field(default_factory=list)
    _in_speech: bool = False
    _speech_ms: int = 0
    _silence_ms: int = 0
    _paused_sent: bool = False
    _barged: bool = False
    _overlapped: bool = False
    last_speech_frame_at: float = 0.0  # audio seconds of the last voiced frame (for latency)
    last_speech_seen_at: float = 0.0  # time.monotonic() when the last voiced frame was processed
    last_sound_seen_at: float = 0.0  # time.monotonic() of the last frame above -40 dBFS (the VAD's hangover follows it)
    end_of_turn_silence_ms: int | None = None  # this pause's end-of-turn silence, once the words have set it
    words_pending: Callable[[], bool] | None = None  # a recognition of this pause is under way: its words decide
    _clock_frames: int = 0

    @property
    def utterance(self) -> np.ndarray:
        return np.concatenate(self._utterance) if self._utterance else np.zeros(0, dtype=np.float32)

    def feed(self, audio: np.ndarray) -> list[tuple[TurnEvent, np.ndarray | None]]:
        """Add audio; return the turn events it causes, with the utterance for PAUSED/TURN_ENDED."""
        events: list[tuple[TurnEvent, np.ndarray | None]] = []
        # NaN/inf or out-of-range samples would reach the recogniser in the utterance and fail it.
        clean = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0).clip(-1.0, 1.0)
        self._pending = np.concatenate([self._pending, clean])
        while len(self._pending) >= FRAME_SAMPLES:
            frame, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
            events.extend(self._frame(frame))
        return events

    def _frame(self, frame: np.ndarray) -> list[tuple[TurnEvent, np.ndarray | None]]:
        options = self.options
        self._clock_frames += 1
        if float(np.sqrt(np.mean(frame * frame))) > _SOUND_RMS:
            self.last_sound_seen_at = time.monotonic()
        probability = self.vad.probability(frame)
        voiced = probability >= (options.speech_stop_threshold if self._in_speech else options.speech_start_threshold)
        events: list[tuple[TurnEvent, np.ndarray | None]] = []
        if not self._in_speech:
            self._history.append(frame)
            del self._history[: -max(1, options.pre_speech_ms // FRAME_MS)]
            if voiced:
                self._speech_ms += FRAME_MS
                if self._speech_ms >= options.min_speech_ms:
                    self._in_speech = True
                    self._overlapped = self.bot_speaking
                    self._utterance = list(self._history)
                    self._silence_ms = 0
                    events.append((TurnEvent.SPEECH_STARTED, None))
            else:
                self._speech_ms = 0
            return events
        self._utterance.append(frame)
        self._overlapped = self._overlapped or self.bot_speaking
        if voiced:
            self.last_speech_frame_at = self._clock_frames * FRAME_MS / 1000
            self.last_speech_seen_at = time.monotonic()
            self._speech_ms += FRAME_MS
            self.end_of_turn_silence_ms = None
            if self._paused_sent:
                events.append((TurnEvent.RESUMED, None))
                self._paused_sent = False
            self._silence_ms = 0
            if self.bot_speaking and not self._barged and self._speech_ms >= options.barge_in_min_speech_ms:
                self._barged = True
                events.append((TurnEvent.BARGE_IN, None))
        else:
            self._silence_ms += FRAME_MS
            if not self._paused_sent and self._silence_ms >= options.speculative_after_ms:
                self._paused_sent = True
                events.append((TurnEvent.PAUSED, self.utterance))
        too_long = len(self._utterance) * FRAME_MS >= options.max_utterance_s * 1000
        if too_long or (self._silence_ms >= self.silence_to_end_ms and not self._waiting_for_words()):
            events.append(self._end())
        return events

    def _waiting_for_words(self) -> bool:
        """The default silence has passed but the pause's transcript is still being recognised:
        wait for its words (up to the longest silence), which cost no latency, since the reply
        needs that transcript anyway."""
        return (self.end_of_turn_silence_ms is None and self.words_pending is not None and self.words_pending()
                and self._silence_ms < self.options.incomplete_turn_silence_ms)

    @property
    def silence_to_end_ms(self) -> int:
        """The silence that ends the turn in the pause going on: set from the words, else the default."""
        return self.end_of_turn_silence_ms or self.options.end_of_turn_silence_ms

    @property
    def silence_ms(self) -> int:
        return self._silence_ms if self._in_speech else 0

    def in_pause(self) -> bool:
        """The caller has spoken and is silent now (long enough for a speculative recognition)."""
        return self._in_speech and self._paused_sent

    def set_end_of_turn_silence(self, milliseconds: int) -> list[tuple[TurnEvent, np.ndarray | None]]:
        """The words heard so far set this pause's end-of-turn silence; a pause already that long
        ends the turn now."""
        if not self.in_pause():
            return []
        self.end_of_turn_silence_ms = milliseconds
        return [self._end()] if self._silence_ms >= milliseconds else []

    def _end(self) -> tuple[TurnEvent, np.ndarray | None]:
        event = TurnEvent.BACKCHANNEL if self._overlapped and not self._barged else TurnEvent.TURN_ENDED
        utterance = self.utterance
        self._reset()
        return event, utterance

    def _reset(self) -> None:
        self._in_speech = False
        self._utterance = []
        self._history = []
        self._speech_ms = 0
        self._silence_ms = 0
        self._paused_sent = False
        self._barged = False
        self._overlapped = False
        self.end_of_turn_silence_ms = None
