"""What the runtime tells operators' tools about its work: Prometheus metrics (always, in a
registry of the runtime's own) and OpenTelemetry spans (when ``[tracing] enabled``). The
runtime calls ``turn_finished`` for every turn that ended, channels call ``error`` for every
error frame they send, a call reports its first audio."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest, start_http_server

from voicebot.config import ConfigError, Settings
from voicebot.core import batching
from voicebot.core.events import BotMessage, ErrorEvent, Event
from voicebot.telemetry.metrics import ActiveSessions, BotMetrics
from voicebot.telemetry.tracing import TurnTracer, tracer_provider

if TYPE_CHECKING:
    from voicebot.core.pipeline import TurnContext
    from voicebot.core.runtime import BotRuntime

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Telemetry:
    def __init__(self, runtime: BotRuntime, settings: Settings) -> None:
        self.settings = settings
        self.metrics = BotMetrics()
        self.metrics.watch_sessions(ActiveSessions(lambda: [h.session.channel for h in list(runtime.sessions.values())],
                                                   lambda: settings.server.channels))
        self.tracer: TurnTracer | None = None
        if settings.tracing.enabled:
            self.tracer = TurnTracer(tracer_provider(settings.tracing), owned=settings.tracing.exporter != "none")
        self._listener: Any = None

    def start(self) -> None:
        batching.batch_listeners.append(self.metrics.batch)
        listen = self.settings.metrics.listen
        if listen:
            host, _, port = listen.rpartition(":")
            try:
                self._listener = start_http_server(int(port), host or "0.0.0.0", registry=self.metrics.registry)
            except OSError as exc:
                raise ConfigError(f"metrics.listen {listen!r}: cannot listen there ({exc})") from None
            log.info("metrics also served without a key on http://%s/metrics", listen)

    def close(self) -> None:
        if self.metrics.batch in batching.batch_listeners:
            batching.batch_listeners.remove(self.metrics.batch)
        if self._listener is not None:
            server, thread = self._listener
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._listener = None
        if self.tracer is not None:
            self.tracer.close()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.metrics.registry)

    # -- what the runtime and the channels report ------------------------------------------------
    def turn_finished(self, turn: TurnContext | None, channel: str, event: Event) -> None:
        """A turn ended with its bot message or an error; never raises into the session."""
        try:
            if isinstance(event, BotMessage):
                seconds = time.monotonic() - turn.started_at if turn is not None else None
                self.metrics.turn_answered(channel, event.language, event.trace, seconds)
                trace, error = event.trace, None
            elif isinstance(event, ErrorEvent):
                self.metrics.error(event.code)
                trace, error = (turn.trace if turn is not None else {}), event.code
            else:
                return
            if self.tracer is not None and turn is not None:
                self.tracer.turn_finished(turn, channel, trace, error=error)
        except Exception:  # noqa: BLE001 - telemetry must never cost a customer their answer
            log.exception("telemetry failed for a turn of session %s", event.session_id)

    def error(self, code: str) -> None:
        self.metrics.error(code)

    def first_audio(self, after_end_of_turn_ms: float) -> None:
        self.metrics.first_audio(after_end_of_turn_ms)
