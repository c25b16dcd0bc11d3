"""The Twilio Media Streams wire format, both directions.

Inbound messages (carrier -> bot) are validated with pydantic; unknown fields are ignored (the
carrier adds some over time), a wrong shape is an error the channel counts and drops. Outbound
messages are built here so the channel never spells JSON by hand.
https://www.twilio.com/docs/voice/media-streams/websocket-messages
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from voicebot.channels.twilio.codec import RATE

MAX_PAYLOAD_CHARS = 16_000  # base64 of 1.5 s of μ-law: far above a 20 ms frame, so a frame this big is not audio


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class MediaFormat(_Message):
    encoding: Literal["audio/x-mulaw"]
    sample_rate: Literal[RATE] = Field(alias="sampleRate")
    channels: Literal[1] = 1


class StartInfo(_Message):
    stream_sid: str = Field(alias="streamSid", min_length=1, max_length=64)
    call_sid: str = Field(alias="callSid", min_length=1, max_length=64)
    account_sid: str = Field("", alias="accountSid", max_length=64)
    media_format: MediaFormat = Field(alias="mediaFormat")
    custom_parameters: dict[str, str] = Field(default_factory=dict, alias="customParameters")


class Connected(_Message):
    event: Literal["connected"]


class Start(_Message):
    event: Literal["start"]
    start: StartInfo


class MediaInfo(_Message):
    payload: str = Field(max_length=MAX_PAYLOAD_CHARS)
    track: str = "inbound"

    def audio(self) -> bytes:
        """The μ-law bytes; ``ValueError`` when the payload is not base64."""
        try:
            return base64.b64decode(self.payload, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"media payload is not base64: {exc}") from None


class Media(_Message):
    event: Literal["media"]
    media: MediaInfo


class DtmfInfo(_Message):
    digit: str = Field(pattern=r"^[0-9*#A-D]$")


class Dtmf(_Message):
    event: Literal["dtmf"]
    dtmf: DtmfInfo


class MarkInfo(_Message):
    name: str = Field(max_length=64)


class Mark(_Message):
    event: Literal["mark"]
    mark: MarkInfo


class Stop(_Message):
    event: Literal["stop"]


Inbound = Annotated[Connected | Start | Media | Dtmf | Mark | Stop, Field(discriminator="event")]
INBOUND = TypeAdapter(Inbound)


def parse(text: str) -> Connected | Start | Media | Dtmf | Mark | Stop:
    """One inbound message; ``pydantic.ValidationError`` for anything else (garbage, a wrong shape)."""
    return INBOUND.validate_json(text)


def media(stream_sid: str, ulaw: bytes) -> dict[str, Any]:
    return {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(ulaw).decode("ascii")}}


def mark(stream_sid: str, name: str) -> dict[str, Any]:
    return {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}


def clear(stream_sid: str) -> dict[str, Any]:
    return {"event": "clear", "streamSid": stream_sid}
