"""An integrator's own PII patterns per locale (``privacy.extra_patterns``), compiled once.

Customer numbers, national ids and postcodes look different in every market, so patterns are
configured per locale: a turn in German is checked with the ``de`` patterns (``de-AT`` falls back
to ``de``) plus the ``'*'`` ones. Logs have no language, so they get every locale's patterns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from voicebot.config import ConfigError
from voicebot.core.languages import normalise_language_tag
from voicebot.privacy.redaction import NAME

Compiled = dict[str, re.Pattern[str]]


class LocalePatterns:
    def __init__(self, patterns: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._by_locale: dict[str, Compiled] = {}
        for locale, named in (patterns or {}).items():
            compiled: Compiled = {}
            for name, regex in named.items():
                setting = f"privacy.extra_patterns.{locale}.{name}"
                if not NAME.fullmatch(name):
                    raise ConfigError(f"{setting}: a pattern's name must be a word (letters, digits, _)")
                try:
                    compiled[name] = re.compile(regex)
                except re.error as exc:
                    raise ConfigError(f"{setting}: not a regular expression: {exc}") from None
            self._by_locale[normalise_language_tag(locale)] = compiled
        self._cache: dict[str, Compiled] = {}
        self.everything = self._merge(list(self._by_locale.values()))

    def __bool__(self) -> bool:
        return any(self._by_locale.values())

    def for_language(self, language: str | None) -> Compiled:
        """The ``'*'`` patterns plus the language's own (exact locale, else its base language)."""
        key = normalise_language_tag(language or "")
        found = self._cache.get(key)
        if found is None:
            own = self._by_locale.get(key) or self._by_locale.get(key.split("-")[0]) or {}
            found = self._cache[key] = self._merge([self._by_locale.get("*", {}), own])
        return found

    @staticmethod
    def _merge(groups: list[Compiled]) -> Compiled:
        """One pattern per name; two locales' different patterns of one name match either."""
        merged: Compiled = {}
        for group in groups:
            for name, pattern in group.items():
                known = merged.get(name)
                if known is None or known.pattern == pattern.pattern:
                    merged[name] = pattern
                else:
                    try:
                        merged[name] = re.compile(f"(?:{known.pattern})|(?:{pattern.pattern})")
                    except re.error:  # global inline flags cannot be combined: the more specific wins
                        merged[name] = pattern
        return merged
