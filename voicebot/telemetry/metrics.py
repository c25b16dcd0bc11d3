"""The Prometheus metrics of one runtime, in a registry of its own (not prometheus_client's global
one), so several runtimes in one process (tests) never collide. Every metric, its labels and
what it means: docs/operations.md."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds: chat turns take milliseconds to a second; voice turns and slow stages up to tens.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
VOICE_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
RTF_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)


class ActiveSessions(Collector):
    """``voicebot_active_sessions`` read from the live sessions at scrape time: it cannot drift
    from the truth the way a gauge counted up and down could."""

    def __init__(self, channels_of_sessions: Callable[[], Iterable[str]], channels: Callable[[], Iterable[str]]) -> None:
        self._sessions = channels_of_sessions
        self._channels = channels

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("voicebot_active_sessions", "Live sessions (chat and calls), by channel", labels=["channel"])
        counts = Tally(self._sessions())
        for channel in sorted(set(self._channels()) | set(counts)):  # served channels show 0 rather than nothing
            family.add_metric([channel], counts.get(channel, 0))
        yield family


class BotMetrics:
    """The metric objects and what records into them; ``render`` is the text a scrape gets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turn_latency = Histogram("voicebot_turn_latency_seconds", "A turn from the user's message to the stored bot message",
                                      ["channel"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("voicebot_stage_latency_seconds", "One pipeline stage's share of a turn",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.voice_to_voice = Histogram("voicebot_voice_to_voice_seconds", "A call: the end of the caller's turn to the bot's first audio",
                                        buckets=VOICE_BUCKETS, registry=r)
        self.turns = Counter("voicebot_turns", "Answered turns", ["channel", "language", "path"], registry=r)
        self.handoffs = Counter("voicebot_handoffs", "Conversations handed to a person, by why", ["reason"], registry=r)
        self.errors = Counter("voicebot_errors", "Errors a customer noticed (error frames, failed stages, timeouts), by code",
                              ["code"], registry=r)
        self.batch_size = Histogram("voicebot_batch_size", "Requests per batch of a shared model batcher", ["batcher"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_wait = Histogram("voicebot_batch_wait_seconds", "How long a batch's oldest request waited for it to start",
                                    ["batcher"], buckets=WAIT_BUCKETS, registry=r)
        self.asr_rtf = Histogram("voicebot_asr_real_time_factor", "Speech recognition compute time over the utterance's duration",
                                 buckets=RTF_BUCKETS, registry=r)

    def watch_sessions(self, sessions: ActiveSessions) -> None:
        self.registry.register(sessions)

    # -- recording -----------------------------------------------------------------------------
    def turn_answered(self, channel: str, language: str, trace: dict[str, Any], seconds: float | None) -> None:
        """One answered turn, from its trace (what the operator reads is what is counted)."""
        response = trace.get("response") or {}
        self.turns.labels(channel, language, str(response.get("path") or "unknown")).inc()
        if response.get("handoff_reason"):
            self.handoffs.labels(str(response["handoff_reason"])).inc()
        if seconds is not None:
            self.turn_latency.labels(channel).observe(seconds)
        for stage, ms in (trace.get("timings_ms") or {}).items():
            self.stage_latency.labels(stage).observe(float(ms) / 1000.0)
        for failure in trace.get("errors") or []:
            self.error(f"{failure.get('stage', 'stage')}_failed")
        asr = (trace.get("voice") or {}).get("asr") or {}
        spoken_s = ((trace.get("voice") or {}).get("endpointing") or {}).get("utterance_s")
        if asr.get("compute_ms") is not None and spoken_s:
            self.asr_rtf.observe(float(asr["compute_ms"]) / 1000.0 / float(spoken_s))

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def first_audio(self, after_end_of_turn_ms: float) -> None:
        self.voice_to_voice.observe(after_end_of_turn_ms / 1000.0)

    def batch(self, name: str, size: int, waited_s: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_wait.labels(name).observe(waited_s)
