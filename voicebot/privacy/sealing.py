"""What happens to conversation text on its way into the database and back out.

Two protections, chosen separately (``privacy.redact_stored``, ``privacy.encrypt_at_rest``):

- *Transcripts and traces are redacted* before they are stored: an operator reading a
  conversation, an export, a backup never sees a customer's e-mail, phone, card or IBAN. The live
  turn has already used the real value by then (the reply was decided before the turn is stored).
- *Everything is encrypted*: transcripts, traces, comments, dialogue state, profiles.

The dialogue state is encrypted but **not** redacted, on purpose: it is what a resumed conversation
continues from (after a reconnect or a server restart), and its slots must hold the real values:
a password reset needs the real e-mail address, not ``<EMAIL>``. It is deleted with its
conversation (retention, erasure), and encryption keeps it unreadable in the file meanwhile.

Sealing runs in the storage worker thread, so neither regex scans nor AES ever block the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from voicebot.config import PrivacySettings
from voicebot.core import jsontext
from voicebot.privacy.crypto import TextCipher
from voicebot.privacy.masking import redact_turn
from voicebot.privacy.patterns import LocalePatterns


class Sealer:
    """Redaction and encryption of stored text. ``Sealer()`` stores everything as it is (what a
    bare ``SqliteStorage(path)`` does, for tools and tests); ``from_settings`` is what the bot uses."""

    def __init__(self, cipher: TextCipher | None = None, patterns: LocalePatterns | None = None, *,
                 redact: bool = False, encrypt: bool = False) -> None:
        self.cipher = cipher or TextCipher([], "no key configured")
        self.patterns = patterns or LocalePatterns()
        self.redact = redact
        self.encrypt = encrypt

    @classmethod
    def from_settings(cls, privacy: PrivacySettings, data_dir: Path, *, create_key: bool = True) -> Sealer:
        cipher = TextCipher.from_settings(privacy, data_dir, create=create_key)
        return cls(cipher, LocalePatterns(privacy.extra_patterns), redact=privacy.redact_stored, encrypt=privacy.encrypt_at_rest)

    # -- writing -------------------------------------------------------------------------------
    def seal_turn(self, user_text: str, bot_text: str, trace: dict[str, Any], language: str | None) -> tuple[str, str, str]:
        """A turn's user text, bot text and trace JSON as stored: redacted, then encrypted."""
        if self.redact:
            (user_text, bot_text), trace, kinds = redact_turn([user_text, bot_text], trace, self.patterns.for_language(language))
            if kinds:  # counts only: an operator sees why the transcript says <EMAIL>
                trace = {**trace, "privacy": {"redacted": dict(sorted(kinds.items()))}}
        trace_json = jsontext.dumps(trace, default=str)
        return self._encrypt(user_text), self._encrypt(bot_text), self._encrypt(trace_json)

    def seal_text(self, text: str | None, language: str | None = None) -> str | None:
        """Free text a customer wrote (a feedback comment) or heard (an interrupted reply).
        Without a language, every locale's patterns apply."""
        if text is None:
            return None
        if self.redact:
            patterns = self.patterns.for_language(language) if language else self.patterns.everything
            (text,), _, _ = redact_turn([text], None, patterns)
        return self._encrypt(text)

    def seal_secret(self, text: str) -> str:
        """Encrypted, never redacted: the dialogue state (see the module docstring)."""
        return self._encrypt(text)

    def seal_json(self, value: Any) -> str:
        return self._encrypt(jsontext.dumps(value))

    def _encrypt(self, text: str) -> str:
        return self.cipher.encrypt(text) if self.encrypt else text

    # -- reading -------------------------------------------------------------------------------
    def open(self, value: str | None) -> str | None:
        """The stored value in clear (unencrypted legacy values come back unchanged)."""
        return None if value is None else self.cipher.decrypt(value)

    def open_json(self, value: str) -> Any:
        return json.loads(self.open(value) or "null")

    def open_conversation(self, conversation: dict[str, Any]) -> dict[str, Any]:
        """A conversation row read for the REST API, in clear."""
        conversation["feedback"] = self.open(conversation.get("feedback"))
        return conversation

    def open_turn(self, turn: dict[str, Any]) -> dict[str, Any]:
        for key in ("user_text", "bot_text", "feedback", "delivered_text"):
            if key in turn:
                turn[key] = self.open(turn[key])
        if isinstance(turn.get("trace"), str):
            turn["trace"] = self.open_json(turn["trace"])
        return turn

    def verify(self, stored: Iterable[str]) -> None:
        """Fail at start-up, with the setting to fix, when the configured keys cannot read what is
        stored. A backend passes a few encrypted values (the SQLite one: the newest and the oldest
        encrypted dialogue state)."""
        for value in stored:
            self.open(value)
