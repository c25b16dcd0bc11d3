"""How every pluggable kind is found and built: channel, storage, asr, tts, vad, nlu, generator.

A config section names its ``backend`` as one of

* a built-in name (the composition layer, ``voicebot/plugins.py``, lists them as import paths, so
  nothing here imports a backend),
* ``package.module:Class``, or
* an installed entry point in group ``voicebot.<kind>`` (``voicebot.asr``, ``voicebot.channel``...).

The class's own ``Options`` (a pydantic model; unknown keys are errors) validates the rest of the
section, so a typo fails at start and names the setting. The backend is then built with
``Class.from_options(options, **context)`` when it defines that, else ``Class(**options)`` (the
options' fields as keyword arguments) when it declares ``Options``, else ``Class()``. Whatever the kind's contract requires (its family's
``base.py``) is checked on the class before anything is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from voicebot.config import ConfigError


class PluginError(ConfigError):
    """A backend that cannot be found, imported, or configured; the message names the setting."""


class NoOptions(BaseModel):
    """The options of a backend that takes none: any key in its section is an error."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class PluginKind:
    """One pluggable kind: its built-in backends and the methods its contract requires."""

    name: str
    builtins: Mapping[str, str] = field(default_factory=dict)  # name -> "module:Class"
    required: tuple[str, ...] = ()  # attributes every backend class must have (its contract)

    @property
    def group(self) -> str:
        return f"voicebot.{self.name}"


class Registry:
    def __init__(self, kinds: Iterable[PluginKind]) -> None:
        self.kinds = {kind.name: kind for kind in kinds}

    def kind(self, name: str) -> PluginKind:
        try:
            return self.kinds[name]
        except KeyError:
            raise PluginError(f"no plug-in kind {name!r}; kinds: {', '.join(sorted(self.kinds))}") from None

    def resolve(self, kind_name: str, backend: str, setting: str) -> type:
        """The class ``backend`` names, checked against the kind's contract."""
        kind = self.kind(kind_name)
        reference = kind.builtins.get(backend)
        if reference is None and ":" in backend:
            reference = backend
        if reference is None:
            found = [ep for ep in entry_points(group=kind.group) if ep.name == backend]
            if not found:
                known = ", ".join(sorted(kind.builtins)) or "none built in"
                raise PluginError(f"{setting}: unknown {kind.name} {backend!r}: use one of {known}, "
                                  f"a 'package.module:Class' path, or an entry point in group {kind.group}")
            try:
                cls = found[0].load()
            except Exception as exc:  # an entry point's import can fail in any way
                raise PluginError(f"{setting}: {kind.name} backend {backend!r}: entry point {found[0].value} does not load: {exc}") from None
        else:
            cls = _import(reference, setting, kind.name, backend)
        missing = [name for name in kind.required if not hasattr(cls, name)]
        if not isinstance(cls, type) or missing:
            what = "is not a class" if not isinstance(cls, type) else f"lacks {', '.join(missing)}"
            raise PluginError(f"{setting}: {kind.name} backend {backend!r} ({reference or backend}) {what}: "
                              f"see the contract in docs/extending.md")
        return cls

    def options(self, cls: type, values: Mapping[str, Any], setting: str) -> BaseModel:
        """Validate a section against the backend's ``Options``; errors name each bad key."""
        model: type[BaseModel] = getattr(cls, "Options", NoOptions)
        try:
            return model.model_validate(dict(values))
        except ValidationError as exc:
            lines = []
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"])
                message = "unknown setting for this backend" if error["type"] == "extra_forbidden" else error["msg"]
                lines.append(f"  {setting}.{key}: {message}")
            raise PluginError(f"invalid settings for {cls.__module__}.{cls.__qualname__}:\n" + "\n".join(lines)) from None

    def create(self, kind_name: str, backend: str, values: Mapping[str, Any], setting: str, **context: Any) -> Any:
        """Resolve, validate and build one backend. ``context`` goes to ``from_options``."""
        cls = self.resolve(kind_name, backend, setting)
        options = self.options(cls, values, setting)
        factory = getattr(cls, "from_options", None)
        if factory is not None:
            return factory(options, **context)
        return cls(**options.model_dump()) if hasattr(cls, "Options") else cls()


def _import(reference: str, setting: str, kind: str, backend: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise PluginError(f"{setting}: {kind} backend {backend!r}: cannot import {module_name} ({exc}); "
                          f"is its extra installed?") from None
    except AttributeError:
        raise PluginError(f"{setting}: {kind} backend {backend!r}: {module_name} has no {attribute}") from None
