"""Render the domain's response templates in the user's language, with the locale fallback chain."""

from __future__ import annotations

import logging
import string
from typing import Any

from voicebot.dialogue.domain import Domain
from voicebot.dialogue.locales import Locales

log = logging.getLogger(__name__)


class _Lenient(dict[str, Any]):
    """Missing placeholders render empty (logged), so a template typo never breaks a turn."""

    def __missing__(self, key: str) -> str:
        log.warning("response placeholder {%s} has no value", key)
        return ""


class ResponseTemplates:
    def __init__(self, domain: Domain, locales: Locales) -> None:
        self._responses = domain.responses
        self._locales = locales
        self._default = domain.spec.default_language

    def chain(self, language: str) -> list[str]:
        """The locale chain, then the domain's default language: a user whose language the domain
        has no responses in (and whose locale falls back to one it lacks too) still gets an answer."""
        chain = self._locales.chain(language)
        return chain if self._default in chain else [*chain, self._default]

    def has(self, key: str, language: str) -> bool:
        return any(key in self._responses.get(code, {}) for code in self.chain(language))

    def render(self, key: str, language: str, values: dict[str, Any], variant: int = 0) -> tuple[str, str, dict[str, str]] | None:
        """Text for ``key``, the language it came from, and the values it shows (its facts);
        None if no language has the key."""
        for code in self.chain(language):
            template = self._responses.get(code, {}).get(key)
            if template is None:
                continue
            chosen = template[variant % len(template)] if isinstance(template, list) else template
            labelled = _Lenient(self._with_labels(values, code))
            used = {name: str(labelled[name]) for _, name, _, _ in string.Formatter().parse(chosen) if name}
            return string.Formatter().vformat(chosen, (), labelled), code, used
        return None

    def _with_labels(self, values: dict[str, Any], language: str) -> dict[str, Any]:
        """Add ``<name>_text`` for values that have a label key (status=shipped -> status_shipped)."""
        labelled = {key: ("" if value is None else value) for key, value in values.items()}
        for key, value in values.items():
            label = self._responses.get(language, {}).get(f"{key}_{value}")
            if isinstance(label, str):
                labelled.setdefault(f"{key}_text", label)
        return labelled
