"""Encryption at rest for stored conversation text: Fernet tokens under a list of keys.

A stolen database file (or a backup of it) must not give away what customers said, so every text
column that holds conversation content is stored as a Fernet token (AES-128-CBC + HMAC-SHA256).
Keys come newest first: the newest encrypts, all of them decrypt (``MultiFernet``), so a key can be
rotated without losing what the older one wrote; ``voicebot rotate-keys`` then re-encrypts every
row with the newest key so the old one can be retired.

Stored values carry a prefix (``enc1:``) so a database written before encryption was turned on
still reads: a value without the prefix is legacy plaintext and is returned as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from voicebot.config import ConfigError, PrivacySettings

PREFIX = "enc1:"
KEY_FILE_NAME = "encryption.key"
KEY_SETTINGS = "privacy.encryption_keys (env VOICEBOT_PRIVACY__ENCRYPTION_KEYS) or privacy.encryption_keys_file"
NEW_KEY_HINT = "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"

log = logging.getLogger(__name__)


class EncryptionKeyError(ConfigError):
    """Stored data cannot be decrypted (wrong or missing key), or a key is malformed: an operator's
    problem, phrased with the setting to fix, not a traceback."""


class TextCipher:
    """Encrypts and decrypts stored text; ``source`` says where the keys came from (for errors)."""

    def __init__(self, keys: Sequence[str | bytes], source: str) -> None:
        self.source = source
        fernets = []
        for index, key in enumerate(keys):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                raise EncryptionKeyError(f"key #{index + 1} of {source} is not a Fernet key (32 url-safe base64-encoded bytes); "
                                         f"{NEW_KEY_HINT}") from None
        self._fernet = MultiFernet(fernets) if fernets else None
        self._newest = fernets[0] if fernets else None

    @property
    def has_keys(self) -> bool:
        return self._fernet is not None

    @staticmethod
    def is_encrypted(value: str) -> bool:
        return value.startswith(PREFIX)

    def encrypt(self, text: str) -> str:
        if self._fernet is None:
            raise EncryptionKeyError(f"encryption at rest is on but no key is configured: set {KEY_SETTINGS}")
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, value: str) -> str:
        """The plaintext of a stored value (legacy unencrypted values come back unchanged)."""
        if not value.startswith(PREFIX):
            return value
        if self._fernet is None:
            raise EncryptionKeyError(f"the database holds encrypted conversations but no key is configured: set {KEY_SETTINGS} "
                                     "to the key(s) they were written with")
        try:
            return self._fernet.decrypt(value[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise self.wrong_key() from None

    def rotate(self, value: str) -> str:
        """``value`` encrypted under the newest key (a legacy plaintext value gets encrypted)."""
        if not value.startswith(PREFIX) or self._fernet is None:
            return self.encrypt(value)  # keyless: raises the error that names the setting
        try:
            return PREFIX + self._fernet.rotate(value[len(PREFIX):].encode("ascii")).decode("ascii")
        except InvalidToken:
            raise self.wrong_key() from None

    def under_newest_key(self, value: str) -> bool:
        """Whether ``value`` is already encrypted with the newest key (rotation can skip it)."""
        if self._newest is None or not value.startswith(PREFIX):
            return False
        try:
            self._newest.decrypt(value[len(PREFIX):].encode("ascii"))
        except InvalidToken:
            return False
        return True

    def wrong_key(self) -> EncryptionKeyError:
        return EncryptionKeyError(f"stored conversations cannot be decrypted with the keys from {self.source}: set {KEY_SETTINGS} "
                                  "to the key(s) the data was written with (newest first; keep an old key in the list until "
                                  "'voicebot rotate-keys' has re-encrypted everything)")

    @classmethod
    def from_settings(cls, privacy: PrivacySettings, data_dir: Path, *, create: bool = True) -> TextCipher:
        """Keys from ``privacy.encryption_keys``, else ``privacy.encryption_keys_file``, else the data
        dir's ``encryption.key`` (generated there when encryption is on and ``create`` is true)."""
        if privacy.encryption_keys:
            return cls([key.get_secret_value().strip() for key in privacy.encryption_keys], "privacy.encryption_keys")
        if privacy.encryption_keys_file is not None:
            path = privacy.encryption_keys_file
            try:
                keys = read_key_file(path)
            except OSError as exc:
                raise EncryptionKeyError(f"privacy.encryption_keys_file {path} cannot be read: {exc.strerror or exc}") from None
            if not keys:
                raise EncryptionKeyError(f"privacy.encryption_keys_file {path} holds no key; {NEW_KEY_HINT}")
            return cls(keys, f"privacy.encryption_keys_file {path}")
        path = data_dir / KEY_FILE_NAME
        if path.is_file():
            return cls(read_key_file(path), f"the key file {path} (generated; set {KEY_SETTINGS} to keep the key elsewhere)")
        if privacy.encrypt_at_rest and create:
            write_new_key_file(path)
            log.warning("generated an encryption key in %s, next to the data it protects: anyone with a copy of the data dir "
                        "can read the conversations. Keep the key elsewhere with %s", path, KEY_SETTINGS)
            return cls(read_key_file(path), f"the key file {path} (generated)")
        return cls([], f"no key (set {KEY_SETTINGS})")


def read_key_file(path: Path) -> list[str]:
    """One key per line, newest first; blank lines and ``#`` comments are ignored."""
    lines = path.read_text(encoding="ascii").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def write_new_key_file(path: Path) -> None:
    """A fresh key, readable by the owner only (created with 0600, never widened by the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(Fernet.generate_key().decode("ascii") + "\n")
