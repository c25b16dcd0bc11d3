"""Find channel classes by name: built-ins, 'module:Class' paths, or installed entry points."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from voicebot.channels.base import Channel
from voicebot.config import ConfigError

BUILTIN = {
    "websocket": "voicebot.channels.websocket.channel:WebsocketChatChannel",
    "webrtc": "voicebot.channels.webrtc.channel:WebRTCChannel",
}


class UnknownChannelError(ConfigError):
    """server.channels names a channel that cannot be loaded."""


def load_channel_class(name: str) -> type[Channel]:
    reference = BUILTIN.get(name)
    if reference is None and ":" in name:
        reference = name
    if reference is None:
        found = [ep for ep in entry_points(group="voicebot.channels") if ep.name == name]
        if found:
            return found[0].load()
        known = ", ".join(sorted(BUILTIN))
        raise UnknownChannelError(f"server.channels: unknown channel {name!r}: use one of {known}, a 'module:Class' path, or a voicebot.channels entry point")
    module_name, _, class_name = reference.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownChannelError(f"server.channels: channel {name!r}: cannot import {reference}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise UnknownChannelError(f"server.channels: channel {name!r}: {reference} is not a voicebot Channel")
    return cls
