"""The audit log: who deleted or re-encrypted what, and when, without the data itself.

Deleting personal data must leave proof that it was deleted, but the proof may not keep the data
alive. A record holds an action, an actor (an API key's name, ``retention``, ``cli``), a tenant and
a detail of counts and ids; ``check_detail`` refuses free text there, so a careless caller cannot
log a transcript into it. A customer is named by a hash of their id (``subject_ref``): an operator
asked "was customer X erased?" can check by hashing X, but the log alone does not name anyone.

This is the policy; a storage backend keeps the records (``Storage.write_audit``), and commits a
deletion's record with the deletion itself, so both are there or neither is.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any

AUDIT_KEYS = ("id", "at", "action", "actor", "tenant", "detail")
_ID = re.compile(r"[\w:.\-]{1,80}")
MAX_IDS = 200


def subject_ref(user_id: str) -> str:
    """A customer's id as the audit log names it: a hash, not the id (which may be an e-mail)."""
    return "sha256:" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]


def check_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` if it holds only numbers, booleans, ids and lists of them; ValueError otherwise."""

    def allowed(value: Any) -> bool:
        if value is None or isinstance(value, bool | int | float):
            return True
        if isinstance(value, str):
            return bool(_ID.fullmatch(value))
        if isinstance(value, list | tuple):
            return len(value) <= MAX_IDS and all(allowed(item) and not isinstance(item, list | tuple) for item in value)
        return False

    for key, value in detail.items():
        if not _ID.fullmatch(str(key)) or not allowed(value):
            raise ValueError(f"audit detail {key!r} must be a count or an id (no free text, at most {MAX_IDS} ids)")
    return dict(detail)


def audit_record(action: str, actor: str, tenant: str | None, detail: Mapping[str, Any]) -> dict[str, Any]:
    """A checked record ``{at, action, actor, tenant, detail}`` for a backend to store (it adds
    the ``id``); ValueError for anything that is not a short name, a count or an id."""
    if not _ID.fullmatch(action):
        raise ValueError(f"audit action must be a short name, not {action!r}")
    if not 0 < len(actor) <= 120 or not actor.isprintable():  # an API key's name from the config
        raise ValueError(f"audit actor must be a short printable name, not {actor!r}")
    return {"at": time.time(), "action": action, "actor": actor, "tenant": tenant, "detail": check_detail(detail)}
