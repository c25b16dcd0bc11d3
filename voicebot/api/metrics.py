"""``GET /metrics``: the runtime's Prometheus metrics in the text exposition format, for a
Prometheus server's scrape (``authorization: {credentials: <key>}`` in its scrape config). Scope
``metrics:read``; ``[metrics] listen`` serves the same without a key on a private address."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from voicebot.access.http import Caller, requires
from voicebot.core.runtime import BotRuntime
from voicebot.telemetry import CONTENT_TYPE


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
                        401: {"description": "no API key, or an unknown one"}, 403: {"description": "the key lacks metrics:read"}})
    async def metrics(caller: Caller = Depends(requires("metrics:read"))) -> Response:
        """Turn and stage latency, turns, hand-offs, errors, live sessions, batching and ASR speed
        of this process (docs/operations.md lists every metric)."""
        return Response(runtime.telemetry.render(), media_type=CONTENT_TYPE)

    return api
