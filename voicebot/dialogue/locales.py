"""Framework messages per language with a fallback chain (zh-tw -> zh -> en)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voicebot.core.languages import normalise_language_tag
from voicebot.resources import locales_dir


@dataclass
class Locale:
    code: str
    name: str
    fallback: str | None
    messages: dict[str, Any]
    sentiment: dict[str, list[str]] = field(default_factory=dict)


class Locales:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or locales_dir()
        self._locales: dict[str, Locale] = {}
        for path in sorted(self.folder.glob("*.yaml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            code = data["language"]
            self._locales[code] = Locale(code, data.get("name", code), data.get("fallback_language"), data.get("messages", {}), data.get("sentiment", {}))

    def __contains__(self, code: str) -> bool:
        return code in self._locales

    def get(self, code: str) -> Locale | None:
        return self._locales.get(code)

    def codes(self) -> list[str]:
        """Every language with framework messages: the languages a conversation may be held in."""
        return list(self._locales)

    def name(self, code: str) -> str:
        """The language's own name for itself (Deutsch, 日本語), as its locale file writes it."""
        locale = self._locales.get(normalise_language_tag(code))
        return locale.name if locale else code

    def chain(self, code: str) -> list[str]:
        """The languages to try, in order, for ``code``; always ends in a language we have."""
        chain: list[str] = []
        current: str | None = normalise_language_tag(code)
        while current and current not in chain:
            chain.append(current)
            locale = self._locales.get(current)
            current = locale.fallback if locale else (current.split("-")[0] if "-" in current else "en")
        if "en" not in chain:
            chain.append("en")
        return chain

    def message(self, key: str, language: str, **values: Any) -> tuple[str, str]:
        """The message text and the language it was actually found in."""
        for code in self.chain(language):
            locale = self._locales.get(code)
            if locale and key in locale.messages:
                return str(locale.messages[key]).format(**values), code
        raise KeyError(f"message {key!r} exists in no locale")

    def intent_name(self, intent: str, language: str) -> str:
        for code in self.chain(language):
            locale = self._locales.get(code)
            names = locale.messages.get("intent_names", {}) if locale else {}
            if intent in names:
                return str(names[intent])
        return intent.replace("_", " ")
