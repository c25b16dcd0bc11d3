"""The carrier's REST API for a live call: hang it up, or transfer it.

Twilio: ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with ``Status=completed``
(hang up) or ``Twiml=<Response><Dial>...`` (the call leaves the stream and dials the number),
basic auth with the account SID and auth token. The base URL is a setting so tests (and a
carrier speaking the same API, such as SignalWire) point it elsewhere. Retries are few and short:
a caller is waiting on the line.
"""

from __future__ import annotations

import logging

import httpx

from voicebot.channels.twilio.webhook import dial

log = logging.getLogger(__name__)


class CarrierError(RuntimeError):
    """The carrier's API refused or could not be reached."""


class CarrierClient:
    def __init__(self, base_url: str, auth_token: str, timeout_s: float = 10.0, attempts: int = 2) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth_token = auth_token
        self.timeout_s = timeout_s
        self.attempts = attempts

    async def hang_up(self, account_sid: str, call_sid: str) -> None:
        await self._update(account_sid, call_sid, {"Status": "completed"})

    async def transfer(self, account_sid: str, call_sid: str, number: str) -> None:
        await self._update(account_sid, call_sid, {"Twiml": dial(number)})

    async def _update(self, account_sid: str, call_sid: str, form: dict[str, str]) -> None:
        url = f"{self.base_url}/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"
        transport = httpx.AsyncHTTPTransport(retries=self.attempts - 1)  # connection failures only; a 4xx is an answer
        async with httpx.AsyncClient(transport=transport, auth=(account_sid, self.auth_token), timeout=self.timeout_s) as client:
            try:
                response = await client.post(url, data=form)
            except httpx.HTTPError as exc:
                raise CarrierError(f"the carrier API at {self.base_url} cannot be reached: {exc!r}") from None
        if response.status_code >= 300:
            raise CarrierError(f"the carrier API answered {response.status_code} for call {call_sid}: {response.text[:200]}")
