"""Deleting conversations for good: retention (by age) and erasure (one customer, on request).

The rules every storage backend follows (``Storage.delete_conversations_older_than`` and
``Storage.erase_customer``), so what is deleted and what its audit record says do not depend on
where conversations are kept:

- Retention deletes conversations idle since the cutoff, oldest first, in batches of
  ``RETENTION_BATCH``, except sessions still connected; one audit record per tenant and batch.
  A profile goes once it is idle as long and its customer has no conversation left (one record,
  tenant None).
- Erasure deletes one customer's conversations (of one tenant, or all), with their turns and
  states, and their profile, which is keyed by user id alone: while another tenant still has
  conversations of that id, the profile stays (it holds a display name and a preferred language,
  no conversation text). One audit record names the customer by hash only.
- Deleted must mean gone from disk too, not just unlinked: how is the backend's business (the
  SQLite backend overwrites freed pages and truncates its write-ahead log).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from voicebot.privacy.audit import MAX_IDS, subject_ref

RETENTION_BATCH = 1000
DELETION_COUNTS = ("conversations", "turns", "states")


def by_tenant(conversations: Iterable[tuple[str, str | None]]) -> dict[str | None, list[str]]:
    """``(id, tenant)`` pairs grouped by tenant, in the order seen: one audit record each."""
    grouped: dict[str | None, list[str]] = {}
    for conversation_id, tenant in conversations:
        grouped.setdefault(tenant, []).append(conversation_id)
    return grouped


def retention_detail(counts: Mapping[str, int], older_than_s: float, cutoff: float) -> dict[str, Any]:
    """The audit detail of one retention deletion (counts only)."""
    return {**counts, "older_than_s": older_than_s, "cutoff": round(cutoff, 3)}


def erasure_detail(user_id: str, conversation_ids: list[str], counts: Mapping[str, int]) -> dict[str, Any]:
    """The audit detail of an erasure: counts, the customer's hash and (some of) the ids deleted."""
    return {**counts, "subject": subject_ref(user_id), "conversation_ids": conversation_ids[:MAX_IDS]}


def profile_survives_erasure(tenant: str | None, other_tenants_have_conversations: bool) -> bool:
    """An erasure in one tenant must not reach into another through the shared profile."""
    return tenant is not None and other_tenants_have_conversations
