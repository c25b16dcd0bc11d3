"""The channel adapter contract: small enough to learn in five minutes.

A channel turns connections of one kind into sessions and renders the session's events for its
clients. It writes three things:

* ``routes()``: the HTTP/websocket routes it serves (mounted by the server, nothing else to edit);
* how it reads its clients' input and renders ``handle.events()`` (typed events: ``BotTextChunk``,
  ``BotMessage``, ``ErrorEvent``...; a voice channel feeds PCM to a ``VoiceCall`` instead);
* optionally ``say_goodbye(handle, goodbye)``: how its client hears the goodbye at a graceful
  shutdown, and ``close()``;
* optionally ``transfer_at_handoff(session, reason)``: what happens when the bot hands the
  conversation to a person on this channel (a phone channel transfers the call; default: the
  agents' console takes it, see docs/agents.md).

The rules every channel follows live here, not in each channel:

* ``admit(token, origin)``: the session token and the web origin (``Unauthorized``: 401/403);
* ``open_session(claims, client=..., ...)``: the session limits (per address, in total), resume,
  shutdown; every refusal is a ``voicebot.core.errors.Refusal`` with ``code``, ``message`` and
  ``http_status`` that the channel renders in its own wire format (``refusal_response`` for HTTP);
* the message rate: ``handle.send_text`` counts each message (``LimitExceeded("rate_limited")``);
* ``start_call()``: the process-wide call limit (``voice.max_calls``) for channels with voice;
* ``drain(deadline)``: at SIGTERM, turns in flight finish, each client gets the goodbye in its
  language (``say_goodbye``), then its session ends.

A channel has its own config section ``[channels.<name>]``, validated by its ``Options`` model,
and says whether it needs voice (``needs_voice``): the runtime then loads VAD, ASR and TTS.
Register it in ``server.channels`` as a built-in name, a ``"package.module:ClassName"`` path, or
an entry point in group ``voicebot.channel``. docs/extending.md has a complete example.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from voicebot.access.limits import CallSlot
from voicebot.access.tokens import SessionClaims
from voicebot.config import ConfigError
from voicebot.core.errors import Refusal
from voicebot.core.registry import NoOptions

if TYPE_CHECKING:
    from voicebot.core.runtime import BotRuntime, SessionHandle
    from voicebot.core.session import Session


@dataclass(frozen=True)
class Goodbye:
    """What a client is told when the server stops: in its language; it may resume afterwards."""

    text: str
    language: str
    resume: bool = True


@dataclass(frozen=True)
class HandoffTransfer:
    """A channel's own answer to a hand-off (``Channel.transfer_at_handoff``). ``mode``:
    ``transferred`` (the channel put the customer through to a person itself, e.g. a carrier
    call transfer) or ``callback`` (a call-back request is stored for the agents' queue).
    ``text`` replaces the hand-off message (say it in ``language``)."""

    mode: str
    text: str
    language: str


class Channel(ABC):
    name: ClassVar[str]
    needs_voice: ClassVar[bool] = False  # the runtime loads VAD, ASR and TTS when any configured channel says so
    Options: ClassVar[type[BaseModel]] = NoOptions  # its [channels.<name>] section; unknown keys fail at start

    def __init__(self, runtime: BotRuntime, options: BaseModel | None = None) -> None:
        self.runtime = runtime
        self.options = options if options is not None else self.Options()
        self._live: dict[str, SessionHandle] = {}  # sessions opened through open_session, for drain

    @classmethod
    def from_options(cls, options: BaseModel, *, runtime: BotRuntime, **_: Any) -> Channel:
        return cls(runtime, options)

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """Routes this channel serves."""

    # -- the rules every channel follows ---------------------------------------------------------
    def admit(self, token: str | None, origin: str | None) -> SessionClaims:
        """The claims of a valid session token from an allowed origin, else ``Unauthorized``."""
        return self.runtime.access.admit(token, origin)

    async def open_session(self, claims: SessionClaims, *, client: str | None = None, resume_token: str | None = None,
                           language: str | None = None, user_id: str | None = None) -> SessionHandle:
        """A new or resumed session of the claims' tenant, counted toward the session limits;
        raises a ``Refusal`` (limits, unknown resume token, shutting down). The channel's sessions
        are tracked so ``drain`` can say goodbye to each."""
        handle = await self.runtime.open_session(
            self.name, resume_token=resume_token, language=language or claims.language, user_id=user_id, tenant=claims.tenant,
            client=client, customer=None if resume_token else (claims.customer or None))
        self._sessions()[handle.id] = handle
        return handle

    def start_call(self) -> CallSlot:
        """One of the process's ``voice.max_calls`` call slots, shared by every voice channel;
        ``Busy`` when none is free. Release it when the call ends (twice is harmless)."""
        return self.runtime.calls.acquire()

    @staticmethod
    def refusal_response(refusal: Refusal) -> JSONResponse:
        """A refusal as an HTTP answer: its status, ``{"error": code, "message": ...}``, and
        ``Retry-After`` where waiting helps."""
        headers = {"Retry-After": str(max(1, round(refusal.retry_after or 5)))} if refusal.http_status in (429, 503) else None
        return JSONResponse(refusal.payload(), status_code=refusal.http_status, headers=headers)

    async def drain(self, deadline: float) -> None:
        """Graceful shutdown (SIGTERM): let each live session's turns finish, tell its client
        goodbye in its language, end it; all before ``deadline`` (event-loop time)."""
        handles = [handle for handle in self._sessions().values() if not handle.closed]
        await asyncio.gather(*(self._goodbye(handle, deadline) for handle in handles), return_exceptions=True)

    async def _goodbye(self, handle: SessionHandle, deadline: float) -> None:
        await handle.wait_idle(deadline)
        text, language = handle.engine.locales.message("server_restarting", handle.session.state.language)
        await self.say_goodbye(handle, Goodbye(text, language), deadline)

    async def say_goodbye(self, handle: SessionHandle, goodbye: Goodbye, deadline: float) -> None:
        """Render the goodbye for this session's client and end the session. Default: just end it."""
        await handle.close()

    async def close(self) -> None:
        """Stop accepting connections and end the live ones (default: nothing to do)."""

    async def transfer_at_handoff(self, session: Session, reason: str | None) -> HandoffTransfer | None:
        """Called once when the bot hands ``session`` to a person (``reason``: asked,
        accepted_offer, sentiment, repeated_failure, identification_failed), before the hand-off
        message is said. A channel that can transfer (a phone line) starts the transfer and
        returns ``HandoffTransfer("transferred", what to say)``; one that cannot but should not
        leave the customer waiting (a call) returns ``"callback"``. Default None: the
        conversation joins the agents' console queue and the customer waits in it (chat)."""
        return None

    def _sessions(self) -> dict[str, SessionHandle]:
        for session_id in [sid for sid, handle in self._live.items() if handle.closed]:
            del self._live[session_id]
        return self._live


def load_channels(runtime: BotRuntime) -> list[Channel]:
    """The channels of ``server.channels``, each built with its ``[channels.<name>]`` section. A
    section for a channel that is not served is an error (a typo would otherwise be ignored)."""
    settings = runtime.settings
    registry = runtime.registry
    channels: list[Channel] = []
    for backend in settings.server.channels:
        cls = registry.resolve("channel", backend, "server.channels")
        if not (isinstance(cls, type) and issubclass(cls, Channel)):
            raise ConfigError(f"server.channels: {backend!r} is not a voicebot Channel (subclass voicebot.channels.base.Channel)")
        section = settings.channels.get(cls.name, {})
        channels.append(registry.create("channel", backend, section, f"channels.{cls.name}", runtime=runtime))
        runtime.channels[cls.name] = channels[-1]  # the agents' desk asks a session's channel at a hand-off
    unused = sorted(set(settings.channels) - {channel.name for channel in channels})
    if unused:
        raise ConfigError(f"channels.{unused[0]}: no such channel in server.channels {settings.server.channels}")
    return channels
