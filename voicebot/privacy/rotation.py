"""Key rotation: re-encrypt every stored value under the newest key, so the old key can go.

The per-value decision is here; the backend walks what it stores (``Storage.rotate_encryption``),
in batches, each its own short write, so a server using the same store keeps writing between them
(start it with the new key first in its list: it then reads both). A value already under the newest
key is left as it is, so an interrupted rotation can simply be run again. Unencrypted legacy
values are encrypted on the way when encryption is on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from voicebot.privacy.crypto import TextCipher

BATCH_ROWS = 500
ROTATION_COUNTS = ("reencrypted", "encrypted", "current")


def rotated(values: Mapping[str, str | None], cipher: TextCipher, encrypt_plaintext: bool, counts: Counter[str]) -> dict[str, str]:
    """The values of one stored record that must be rewritten, under the newest key. Counts:
    ``reencrypted`` (was under an older key), ``encrypted`` (was plaintext), ``current``
    (already under the newest key)."""
    updates = {}
    for name, value in values.items():
        if value is None:
            continue
        if TextCipher.is_encrypted(value):
            if cipher.under_newest_key(value):
                counts["current"] += 1
                continue
            counts["reencrypted"] += 1
        elif encrypt_plaintext:
            counts["encrypted"] += 1
        else:
            continue
        updates[name] = cipher.rotate(value)
    return updates


def rotation_result(counts: Counter[str]) -> dict[str, int]:
    """What ``rotate_encryption`` returns and audits."""
    return {key: counts[key] for key in ROTATION_COUNTS}
