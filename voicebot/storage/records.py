"""What every SQL backend does beside its SQL: seal what it writes, shape and open what it reads.

The SQLite and PostgreSQL backends keep the same tables with the same columns; the sealing of a
turn before it is written, and the making of the contract's dicts (``CONVERSATION_KEYS``,
``TURN_KEYS``, ``RESUME_KEYS``, profiles, audit records, export turns) out of rows, live here once,
so both answer alike and a rule changed here changes both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from voicebot.core.session import DialogueState
from voicebot.privacy.audit import AUDIT_KEYS
from voicebot.privacy.sealing import Sealer
from voicebot.storage.base import CONVERSATION_KEYS, RESUME_KEYS, TURN_KEYS, ExportTurn, StoredTurn

# Every column that holds conversation content: sealed at write, opened at read, and
# re-encrypted by key rotation.
SEALED_COLUMNS: dict[str, tuple[str, ...]] = {
    "turns": ("user_text", "bot_text", "trace", "feedback", "delivered_text"),
    "conversations": ("feedback",),
    "dialogue_state": ("state",),
    "user_profiles": ("display_name", "data"),
}
PROFILE_KEYS = ("user_id", "display_name", "preferred_language", "data", "created_at", "updated_at")
CONVERSATION_COLUMNS = ", ".join(CONVERSATION_KEYS)
TURN_COLUMNS = ", ".join(TURN_KEYS)
PROFILE_COLUMNS = ", ".join(PROFILE_KEYS)
AUDIT_COLUMNS = ", ".join(AUDIT_KEYS)
# The export's rows: conversation_id, bot_text, language, intent, path, trace, turn rating, conversation rating.
EXPORT_SQL = (
    "SELECT t.conversation_id, t.bot_text, t.language, t.intent, t.path, t.trace, t.rating, c.rating "
    "FROM turns t JOIN conversations c ON c.id = t.conversation_id ORDER BY c.created_at, c.id, t.turn_index"
)


@dataclass(frozen=True)
class SealedTurnWrite:
    """One ``save_turn`` as written: the turn's text sealed, the state after it sealed, and what
    the conversation and profile rows take from it."""

    conversation_id: str
    turn_index: int
    turn_id: str
    user_text: str
    bot_text: str
    language: str
    intent: str | None
    path: str
    trace: str
    state: str
    state_language: str
    status: str
    at: float


def seal_turn_writes(sealer: Sealer, payloads: Iterable[tuple[StoredTurn, dict[str, Any], str]]) -> list[SealedTurnWrite]:
    """Redacted and encrypted before any lock is taken (the live turn used the real text)."""
    now = time.time()
    writes = []
    for turn, state, status in payloads:
        user_text, bot_text, trace = sealer.seal_turn(turn.user_text, turn.bot_text, turn.trace, turn.language)
        writes.append(SealedTurnWrite(turn.conversation_id, turn.turn_index, turn.turn_id, user_text, bot_text, turn.language, turn.intent,
                                      turn.path, trace, sealer.seal_json(state), state["language"], status, now))
    return writes


def conversation_record(sealer: Sealer, row: Sequence[Any]) -> dict[str, Any]:
    return sealer.open_conversation(dict(zip(CONVERSATION_KEYS, row, strict=True)))


def turn_record(sealer: Sealer, row: Sequence[Any]) -> dict[str, Any]:
    return sealer.open_turn(dict(zip(TURN_KEYS, row, strict=True)))


def resume_record(sealer: Sealer, row: Sequence[Any]) -> tuple[dict[str, Any], DialogueState]:
    """A row of the ``RESUME_KEYS`` columns followed by the sealed state."""
    info = dict(zip(RESUME_KEYS, row[:len(RESUME_KEYS)], strict=True))
    return info, DialogueState.from_dict(sealer.open_json(row[len(RESUME_KEYS)]))


def profile_record(sealer: Sealer, row: Sequence[Any]) -> dict[str, Any]:
    profile = dict(zip(PROFILE_KEYS, row, strict=True))
    profile["display_name"] = sealer.open(profile["display_name"])
    profile["data"] = sealer.open_json(profile["data"])
    return profile


def audit_item(row: Sequence[Any]) -> dict[str, Any]:
    """An audit row as ``list_audit`` returns it; ``detail`` stored as JSON text or a JSON column."""
    item = dict(zip(AUDIT_KEYS, row, strict=True))
    if isinstance(item["detail"], str):
        item["detail"] = json.loads(item["detail"])
    return item


def audit_detail_json(record: dict[str, Any]) -> str:
    return json.dumps(record["detail"], sort_keys=True)


def export_turn(sealer: Sealer, row: Sequence[Any]) -> ExportTurn:
    conversation_id, bot_text, language, intent, path, trace, turn_rating, conversation_rating = row
    return ExportTurn(conversation_id, sealer.open(bot_text) or "", language, intent, path, sealer.open_json(trace), turn_rating,
                      conversation_rating)
