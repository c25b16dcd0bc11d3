"""``/dashboard``: the operator's page of plots (voicebot/web/dashboard.*, Chart.js vendored
beside it: no CDN). The page itself is public; everything it shows comes from the REST API with
the operator's key, which the page keeps in the tab's sessionStorage (docs/operations.md)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from voicebot.core.runtime import BotRuntime
from voicebot.resources import web_dir

ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "chart.umd.min.js": "text/javascript"}
# Scripts and styles from this server only: a message a customer wrote cannot run in an operator's page.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    @api.get("/dashboard", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(web_dir() / "dashboard.html", media_type="text/html", headers=SECURITY_HEADERS)

    @api.get("/dashboard/{asset}", include_in_schema=False)
    async def dashboard_asset(asset: str) -> FileResponse:
        if asset not in ASSETS:
            raise HTTPException(404, "no such file")
        return FileResponse(web_dir() / asset, media_type=ASSETS[asset], headers={"X-Content-Type-Options": "nosniff"})

    return api
