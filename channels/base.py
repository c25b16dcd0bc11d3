"""The channel adapter contract: small enough to learn in five minutes.

A channel turns connections of one kind into sessions of the runtime and renders the session's
events for its clients:

* ``routes()``: the HTTP/websocket routes it serves (mounted by the server, nothing else to edit);
* for each connection, ``runtime.open_session(channel=self.name, ...)`` gives a ``SessionHandle``;
  user input goes in with ``handle.send_text(text)`` (voice channels push audio frames instead);
* bot output comes out of ``handle.events()`` as typed events (``BotTextChunk``, ``BotMessage``,
  ``BotAudioChunk``, ``ErrorEvent``...), which the channel renders in its own format;
* ``handle.close()`` ends the conversation; ``drain()`` says goodbye at a graceful shutdown and
  ``close()`` stops the channel;
* limits (voicebot/access/limits.py): pass the peer's address as ``open_session(..., client=address)`` so
  it counts toward ``limits.sessions_per_client`` (``LimitExceeded`` when refused), and call
  ``runtime.message_rate.hit(handle.id)`` before each user message to apply the message rate.

Register a channel by name in config (``server.channels``) as a built-in name, a
``"package.module:ClassName"`` path, or an entry point in the ``voicebot.channels`` group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from starlette.routing import BaseRoute

from voicebot.config import ConfigError
from voicebot.core.registry import NoOptions

if TYPE_CHECKING:
    from voicebot.core.runtime import BotRuntime


class Channel(ABC):
    name: ClassVar[str]
    needs_voice: ClassVar[bool] = False  # the runtime loads VAD, ASR and TTS when any configured channel says so
    Options: ClassVar[type[BaseModel]] = NoOptions  # its [channels.<name>] section; unknown keys fail at start

    def __init__(self, runtime: BotRuntime, options: BaseModel | None = None) -> None:
        self.runtime = runtime
        self.options = options if options is not None else self.Options()

    @classmethod
    def from_options(cls, options: BaseModel, *, runtime: BotRuntime, **_: Any) -> Channel:
        return cls(runtime, options)

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """Routes this channel serves."""

    async def drain(self, deadline: float) -> None:
        """Graceful shutdown (SIGTERM): let the live sessions' turns finish, say goodbye, end them,
        all before ``deadline`` (event-loop time). Default: nothing; ``close()`` still runs."""

    async def close(self) -> None:
        """Stop accepting connections and end the live ones (default: nothing to do)."""


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
    unused = sorted(set(settings.channels) - {channel.name for channel in channels})
    if unused:
        raise ConfigError(f"channels.{unused[0]}: no such channel in server.channels {settings.server.channels}")
    return channels
