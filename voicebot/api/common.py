"""What several topic routers share: integer bounds, the undecodable-body response, and the
401/403 every API-key route can answer (declared once here so no route forgets them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from voicebot.core.errors import Refusal

# SQLite integers are 64-bit: a larger path or query integer is refused (422), not an OverflowError (500).
SQLITE_MAX_INT = 2**63 - 1
# FastAPI answers a body it cannot decode (not UTF-8, not JSON at all) with 400 before validation.
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "the request body cannot be parsed"}}


def declare_auth_responses(routes: Iterable[BaseRoute]) -> None:
    """Every route behind an API key can answer 401 and 403: say so in the OpenAPI document.
    A route's own 401/403 wins. Give it a router's routes before ``include_router``: FastAPI
    includes routers lazily, so the app's own route list never shows them."""
    for route in routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api/"):
            route.responses.setdefault(401, {"description": "no API key, or an unknown one"})
            route.responses.setdefault(403, {"description": "the key lacks the scope, or does not reach the tenant"})


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A ``Refusal`` as an HTTP answer: its status, ``{"error": code, "message": ...}`` and
    ``Retry-After`` where waiting helps (as the channels answer; voicebot.channels.base)."""
    headers = {"Retry-After": str(max(1, round(refusal.retry_after or 5)))} if refusal.http_status in (429, 503) else None
    return JSONResponse(refusal.payload(), status_code=refusal.http_status, headers=headers)
