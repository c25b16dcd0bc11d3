"""The carrier's incoming-call webhook: who may call it (the signature) and what it answers (TwiML).

Twilio signs each webhook: HMAC-SHA1 over the URL it called plus the sorted POST parameters,
keyed by the account's auth token, base64, in ``X-Twilio-Signature``. The URL is the public one
the carrier sees (behind a proxy it is not the one this server was asked on), so it comes from
``public_url``. The ``twilio`` package's ``RequestValidator`` does the computation; the TwiML is
built with its ``VoiceResponse`` so quoting is never done by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

SIGNATURE_HEADER = "X-Twilio-Signature"


class IncomingCall(BaseModel):
    """The webhook's form fields this channel uses (the carrier sends many more)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    call_sid: str = Field(alias="CallSid", pattern=r"^CA[0-9a-fA-F]{32}$")
    account_sid: str = Field(alias="AccountSid", pattern=r"^AC[0-9a-fA-F]{32}$")
    caller: str = Field("", alias="From", max_length=64)
    called: str = Field("", alias="To", max_length=64)


def signature_valid(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    return bool(signature) and RequestValidator(auth_token).validate(url, dict(params), signature or "")


def connect_stream(stream_url: str, token: str) -> str:
    """``<Response><Connect><Stream url=...><Parameter name="token" .../></Stream></Connect></Response>``:
    the carrier opens the media stream and hands the token back in ``start.customParameters``.
    When the stream ends the call goes on to the next verb: there is none, so it hangs up."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    stream.parameter(name="token", value=token)
    response.append(connect)
    return str(response)


def dial(number: str) -> str:
    """TwiML that transfers the call to ``number`` (a hand-off to a human)."""
    response = VoiceResponse()
    response.append(Dial(number))
    return str(response)


def reject(reason: str = "busy") -> str:
    response = VoiceResponse()
    response.reject(reason=reason)
    return str(response)
