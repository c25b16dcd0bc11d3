"""OpenTelemetry spans (``[tracing] enabled = true``, extra ``tracing``): one span per turn with a
child per pipeline stage, timed by the pipeline's own measurements, so a deployment's tracing
backend (Jaeger, Tempo, Honeycomb...) shows where a slow turn spent its time. Off by default; the
SDK is imported only when it is on."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from voicebot.config import ConfigError, TracingSettings

if TYPE_CHECKING:
    from voicebot.core.pipeline import TurnContext


def tracer_provider(settings: TracingSettings) -> Any:
    """The provider spans go to: the process's global one (``exporter = "none"``: whatever an
    ``opentelemetry-instrument`` wrapper or the embedding application set up), or an SDK
    provider exporting over OTLP/HTTP or to the console."""
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigError("tracing.enabled needs OpenTelemetry: pip install 'voicebot[tracing]'") from None
    if settings.exporter == "none":
        return trace.get_tracer_provider()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError("tracing.exporter needs the OpenTelemetry SDK: pip install 'voicebot[tracing]'") from None
    if settings.exporter == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("tracing.exporter = 'otlp' needs pip install opentelemetry-exporter-otlp-proto-http "
                              "(or set tracing.exporter = 'none' to use the process's own tracer provider)") from None
        exporter = OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class TurnTracer:
    """Turns finished into spans: ``voicebot.turn`` with attributes an operator filters by, and a
    ``voicebot.stage.<name>`` child per stage that worked on it (``asr`` for a call's recognition)."""

    def __init__(self, provider: Any, *, owned: bool) -> None:
        from voicebot import __version__

        self.provider = provider
        self.owned = owned  # built here (exporter otlp/console): flushed and shut down at close
        self.tracer = provider.get_tracer("voicebot", __version__)

    def turn_finished(self, turn: TurnContext, channel: str, trace: dict[str, Any], *, error: str | None = None) -> None:
        from opentelemetry import trace as otel
        from opentelemetry.trace import Status, StatusCode

        now_ns = time.time_ns()
        started_ns = now_ns - int((time.monotonic() - turn.started_at) * 1e9)  # the turn's start on the wall clock
        response = trace.get("response") or {}
        attributes = {
            "voicebot.session_id": turn.session.id, "voicebot.tenant": turn.session.tenant, "voicebot.turn_id": turn.turn_id,
            "voicebot.channel": channel, "voicebot.language": str(response.get("language") or turn.session.state.language),
            "voicebot.path": str(response.get("path") or "error"), "voicebot.intent": str((trace.get("intent") or {}).get("name") or ""),
        }
        if response.get("handoff_reason"):
            attributes["voicebot.handoff_reason"] = str(response["handoff_reason"])
        span = self.tracer.start_span("voicebot.turn", start_time=started_ns, attributes=attributes)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        parent = otel.set_span_in_context(span)
        asr_ms = ((trace.get("voice") or {}).get("asr") or {}).get("compute_ms")
        if asr_ms is not None:  # recognition ran before the turn began
            self._child(parent, "asr", started_ns - int(float(asr_ms) * 1e6), started_ns)
        for stage, ms in (trace.get("timings_ms") or {}).items():
            began = turn.stage_started_ns.get(stage, started_ns)
            self._child(parent, stage, began, began + int(float(ms) * 1e6))
        span.end(end_time=max(now_ns, started_ns))

    def _child(self, parent: Any, stage: str, start_ns: int, end_ns: int) -> None:
        child = self.tracer.start_span(f"voicebot.stage.{stage}", context=parent, start_time=start_ns, attributes={"voicebot.stage": stage})
        child.end(end_time=end_ns)

    def close(self) -> None:
        if self.owned:
            self.provider.shutdown()
