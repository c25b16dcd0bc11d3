"""The hand-off webhook: each hand-off POSTed as signed JSON to a helpdesk (``agents.webhook``).

Signature (docs/agents.md): header ``X-Voicebot-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>." + raw body)``. The receiver recomputes it over the raw bytes,
compares in constant time, and refuses timestamps older than a few minutes (replays). Each try
is signed afresh; ``X-Voicebot-Delivery`` stays the same across tries, so a receiver can drop
repeats. Network errors, 429 and 5xx answers are retried (stamina: exponential back-off with
jitter), other answers are final.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import httpx
import stamina

from voicebot.config import HandoffWebhookSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Voicebot-Signature"
DELIVERY_HEADER = "X-Voicebot-Delivery"
EVENT_HEADER = "X-Voicebot-Event"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, body: bytes, header: str, *, tolerance_s: float = 300, now: float | None = None) -> bool:
    """What a receiver does (a reference for integrators, and the tests): True when ``header``
    signs ``body`` with ``secret`` and is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={fields.get('v1', '')}")


class RetryableAnswer(Exception):
    """The receiver answered 429 or 5xx: worth another try."""


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, RetryableAnswer | httpx.TransportError)


class HandoffWebhook:
    def __init__(self, settings: HandoffWebhookSettings) -> None:
        if settings.url is None or settings.secret is None:
            raise ValueError("agents.webhook needs both url and secret")
        self.url = settings.url
        self._secret = settings.secret.get_secret_value().encode()
        self.settings = settings

    async def deliver(self, payload: dict[str, Any]) -> int | None:
        """POST ``payload`` until the receiver takes it or the tries are spent; the final HTTP
        status, or None when no try got an answer. Never raises: a helpdesk being down must not
        harm the conversation."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        delivery = secrets.token_hex(12)
        status: int | None = None
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
                async for attempt in stamina.retry_context(on=_retryable, attempts=self.settings.attempts,
                                                           wait_initial=self.settings.retry_wait_s, wait_max=60.0, timeout=None):
                    with attempt:
                        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
                                   DELIVERY_HEADER: delivery, EVENT_HEADER: str(payload.get("event", "handoff"))}
                        response = await client.post(self.url, content=body, headers=headers)
                        status = response.status_code
                        if status == 429 or status >= 500:
                            raise RetryableAnswer(f"{self.url} answered {status}")
        except Exception as exc:  # noqa: BLE001 - logged; the conversation goes on
            log.error("hand-off webhook %s for conversation %s failed after %d tries: %s", delivery,
                      payload.get("conversation_id"), self.settings.attempts, exc)
            return status
        if status is not None and status >= 300:
            log.error("hand-off webhook %s for conversation %s refused: HTTP %d", delivery, payload.get("conversation_id"), status)
        return status
