"""An integrator's storage backend, outside the core: everything in dicts, gone when the process ends.

Loaded by config alone (``[storage] backend = "memory_storage:MemoryStorage"`` with this folder on
``PYTHONPATH``) to prove the storage contract (``voicebot.storage.base.Storage``) is all the rest
of the bot needs: no SQL, no file. It keeps what the contract promises and nothing more:

- Transcripts, traces and comments are *redacted* as the sealer says (what an operator reads is
  masked), the dialogue state is not (a resume needs the real values).
- Nothing is *encrypted*: encryption protects data at rest and nothing here is at rest, so there is
  nothing for key rotation to rewrite either (it still leaves its audit record).
- The event loop runs one coroutine at a time and no method awaits while it changes anything, so
  every method is atomic: a turn and the state after it are stored together.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from voicebot.core.session import DialogueState
from voicebot.privacy import deletion
from voicebot.privacy.audit import audit_record
from voicebot.privacy.rotation import rotation_result
from voicebot.privacy.sealing import Sealer
from voicebot.storage.analytics import AnalyticsQuery, aggregate, turn_facts
from voicebot.storage.base import (
    CONVERSATION_KEYS,
    RESUME_KEYS,
    TURN_KEYS,
    ExportTurn,
    StoredTurn,
    check_conversation_rating,
    check_turn_rating,
    hash_token,
)


class MemoryStorage:
    """``[storage] backend = "memory_storage:MemoryStorage"``: for tests and demos, not for customers."""

    @classmethod
    def from_options(cls, options: BaseModel, *, data_dir: Path, sealer: Sealer | None = None, **_: Any) -> MemoryStorage:
        return cls(sealer)  # no options, and no file in data_dir

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.sealer = sealer or Sealer()
        # The sealer's redaction without its encryption (see the module docstring).
        self._redactor = Sealer(patterns=self.sealer.patterns, redact=self.sealer.redact)
        self._conversations: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, str] = {}  # token hash -> conversation id
        self._turns: dict[str, dict[int, dict[str, Any]]] = {}
        self._states: dict[str, str] = {}  # JSON: a copy, never the live session's object
        self._profiles: dict[str, dict[str, Any]] = {}
        self._audit: list[dict[str, Any]] = []

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        if not create:  # a tool (export, rotate-keys) in another process: this store is not there
            raise FileNotFoundError("the memory storage keeps nothing outside its server process")

    async def close(self) -> None:
        pass

    # -- conversations, turns, dialogue state ------------------------------------------------------
    async def create_conversation(self, conversation_id: str, token: str, channel: str, language: str, user_id: str | None,
                                  state: DialogueState, tenant: str = "default") -> None:
        now = time.time()
        if conversation_id in self._conversations or hash_token(token) in self._tokens:
            raise ValueError(f"conversation {conversation_id!r} or its token exists already")
        self._conversations[conversation_id] = {
            "id": conversation_id, "tenant": tenant, "channel": channel, "user_id": user_id, "language": language, "status": "active",
            "turn_count": 0, "created_at": now, "updated_at": now, "rating": None, "feedback": None, "token_hash": hash_token(token),
        }
        self._tokens[hash_token(token)] = conversation_id
        self._turns[conversation_id] = {}
        self._states[conversation_id] = json.dumps(state.to_dict(), ensure_ascii=False)
        if user_id:
            profile = self._profiles.setdefault(user_id, {"user_id": user_id, "display_name": None, "preferred_language": language,
                                                          "data": {}, "created_at": now})
            profile["updated_at"] = now

    async def resume(self, token: str) -> tuple[dict[str, Any], DialogueState] | None:
        conversation = self._conversations.get(self._tokens.get(hash_token(token), ""))
        if conversation is None:
            return None
        info = {key: conversation[key] for key in RESUME_KEYS}
        return info, DialogueState.from_dict(json.loads(self._states[conversation["id"]]))

    async def save_turn(self, turn: StoredTurn, state: DialogueState, status: str) -> None:
        conversation = self._conversations.get(turn.conversation_id)
        if conversation is None:
            raise LookupError(f"no conversation {turn.conversation_id!r} to store a turn in")
        user_text, bot_text, trace = self._redactor.seal_turn(turn.user_text, turn.bot_text, turn.trace, turn.language)
        now = time.time()
        saved = state.to_dict()
        self._turns[turn.conversation_id][turn.turn_index] = {
            "turn_index": turn.turn_index, "turn_id": turn.turn_id, "user_text": user_text, "bot_text": bot_text,
            "language": turn.language, "intent": turn.intent, "path": turn.path, "trace": trace, "created_at": now,
            "rating": None, "feedback": None, "interrupted": 0, "delivered_text": None,
            **vars(turn_facts(turn.trace, turn.path)), "conversation_id": turn.conversation_id,
        }
        self._states[turn.conversation_id] = json.dumps(saved, ensure_ascii=False)
        conversation.update(language=saved["language"], status=status, turn_count=max(conversation["turn_count"], turn.turn_index),
                            updated_at=now)
        profile = self._profiles.get(conversation["user_id"] or "")
        if profile is not None:  # a known customer's next conversation starts in this language
            profile.update(preferred_language=saved["language"], updated_at=now)

    async def end_conversation(self, conversation_id: str) -> None:
        conversation = self._conversations.get(conversation_id)
        if conversation is not None:
            if conversation["status"] not in ("handed_off", "callback"):
                conversation["status"] = "ended"
            conversation["updated_at"] = time.time()

    async def record_interruption(self, conversation_id: str, turn_id: str, delivered_text: str) -> bool:
        turn = self._find_turn(conversation_id, None, turn_id, None)
        if turn is not None:
            turn.update(interrupted=1, delivered_text=self._redactor.seal_text(delivered_text))
        return turn is not None

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        profile = self._profiles.get(user_id)
        return None if profile is None else {**profile, "data": dict(profile["data"])}

    # -- feedback ---------------------------------------------------------------------------------
    async def rate_turn(self, conversation_id: str, *, turn_index: int | None = None, turn_id: str | None = None,
                        rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        check_turn_rating(rating, turn_index, turn_id)
        turn = self._find_turn(conversation_id, turn_index, turn_id, tenant)
        if turn is not None:
            turn.update(rating=rating, feedback=self._redactor.seal_text(comment))
        return turn is not None

    async def rate_conversation(self, conversation_id: str, *, rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        check_conversation_rating(rating)
        conversation = self._conversation(conversation_id, tenant)
        if conversation is not None:
            conversation.update(rating=rating, feedback=self._redactor.seal_text(comment))
        return conversation is not None

    # -- reading ----------------------------------------------------------------------------------
    async def list_conversations(self, limit: int, offset: int, tenant: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        found = [c for c in self._conversations.values() if tenant is None or c["tenant"] == tenant]
        found.sort(key=lambda c: c["updated_at"], reverse=True)
        return len(found), [{key: c[key] for key in CONVERSATION_KEYS} for c in found[offset:offset + limit]]

    async def get_conversation(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        conversation = self._conversation(conversation_id, tenant)
        if conversation is None:
            return None
        turns = [self._redactor.open_turn({key: turn[key] for key in TURN_KEYS}) for _, turn in sorted(self._turns[conversation_id].items())]
        return {**{key: conversation[key] for key in CONVERSATION_KEYS}, "turns": turns, "state": json.loads(self._states[conversation_id])}

    # -- the agents' queue --------------------------------------------------------------------------
    async def set_status(self, conversation_id: str, status: str, tenant: str | None = None) -> bool:
        conversation = self._conversation(conversation_id, tenant)
        if conversation is not None:
            conversation.update(status=status, updated_at=time.time())
        return conversation is not None

    async def list_by_status(self, statuses: Collection[str], tenant: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        found = [c for c in self._conversations.values() if c["status"] in statuses and tenant in (None, c["tenant"])]
        found.sort(key=lambda c: c["updated_at"], reverse=True)
        return [{key: c[key] for key in CONVERSATION_KEYS} for c in found[:limit]]

    async def list_customer_conversations(self, user_id: str, tenant: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        found = [c for c in self._conversations.values() if c["user_id"] == user_id and tenant in (None, c["tenant"])]
        found.sort(key=lambda c: c["created_at"], reverse=True)
        return [{key: c[key] for key in CONVERSATION_KEYS} for c in found[:limit]]

    async def analytics(self, query: AnalyticsQuery) -> dict[str, list[tuple[Any, ...]]]:
        return aggregate((turn for turns in self._turns.values() for turn in turns.values()), self._conversations, query)

    async def unanswered_turns(self, query: AnalyticsQuery, limit: int) -> list[dict[str, Any]]:
        found = [{"conversation_id": t["conversation_id"], "turn_index": t["turn_index"], "user_text": t["user_text"], "language": t["language"],
                  "intent": t["intent"], "reason": t["unanswered"] or "rated_down", "rating": t["rating"], "created_at": t["created_at"],
                  "tenant": self._conversations[t["conversation_id"]]["tenant"]}
                 for turns in self._turns.values() for t in turns.values()
                 if query.since <= t["created_at"] < query.until and (t["unanswered"] or t["rating"] == -1)
                 and (query.tenant is None or self._conversations[t["conversation_id"]]["tenant"] == query.tenant)]
        return sorted(found, key=lambda row: -row["created_at"])[:limit]

    async def count_turns(self) -> int:
        return sum(len(turns) for turns in self._turns.values())

    async def integrity_ok(self) -> bool:
        """Every conversation has its state and turns, and nothing else does."""
        return set(self._turns) == set(self._states) == set(self._conversations) == set(self._tokens.values())

    # -- privacy (the rules: voicebot.privacy.deletion, .audit) ------------------------------------
    async def delete_conversations_older_than(self, seconds: float, *, keep: Collection[str] = (), actor: str = "retention") -> int:
        cutoff = time.time() - seconds
        idle = sorted((c for c in self._conversations.values() if c["updated_at"] < cutoff and c["id"] not in keep),
                      key=lambda c: c["updated_at"])
        deleted = 0
        for start in range(0, len(idle), deletion.RETENTION_BATCH):
            batch = [(c["id"], c["tenant"]) for c in idle[start:start + deletion.RETENTION_BATCH]]
            for tenant, ids in deletion.by_tenant(batch).items():
                counts = self._delete(ids)
                deleted += counts["conversations"]
                self._record("retention_delete", actor, tenant, deletion.retention_detail(counts, seconds, cutoff))
        customers = {c["user_id"] for c in self._conversations.values()}
        idle_profiles = [user_id for user_id, p in self._profiles.items() if p["updated_at"] < cutoff and user_id not in customers]
        for user_id in idle_profiles:
            del self._profiles[user_id]
        if idle_profiles:
            self._record("retention_delete", actor, None, deletion.retention_detail({"profiles": len(idle_profiles)}, seconds, cutoff))
        return deleted

    async def erase_customer(self, user_id: str, tenant: str | None = None, *, actor: str = "api") -> dict[str, Any]:
        ids = [c["id"] for c in self._conversations.values() if c["user_id"] == user_id and (tenant is None or c["tenant"] == tenant)]
        counts: Counter[str] = Counter({key: 0 for key in deletion.DELETION_COUNTS})
        counts.update(self._delete(ids))
        elsewhere = any(c["user_id"] == user_id and c["tenant"] != tenant for c in self._conversations.values())
        keep_profile = deletion.profile_survives_erasure(tenant, elsewhere)
        counts["profiles"] = 0 if keep_profile else int(self._profiles.pop(user_id, None) is not None)
        audit_id = self._record("erase_customer", actor, tenant, deletion.erasure_detail(user_id, ids, counts))
        return {**counts, "audit_id": audit_id, "wiped": True}  # no copy left: nothing was ever on disk

    async def write_audit(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any] | None = None) -> int:
        return self._record(action, actor, tenant, detail or {})

    async def list_audit(self, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        found = [record for record in reversed(self._audit) if tenant is None or record["tenant"] == tenant]
        return len(found), [{**record, "detail": dict(record["detail"])} for record in found[offset:offset + limit]]

    async def rotate_encryption(self, *, actor: str = "cli") -> dict[str, int]:
        result = rotation_result(Counter())  # nothing is encrypted here, so nothing is under an old key
        self._record("rotate_keys", actor, None, result)
        return result

    # -- export -----------------------------------------------------------------------------------
    async def export_turns(self) -> AsyncIterator[ExportTurn]:
        conversations = sorted(self._conversations.values(), key=lambda c: (c["created_at"], c["id"]))
        rows = [ExportTurn(c["id"], turn["bot_text"], turn["language"], turn["intent"], turn["path"], json.loads(turn["trace"]),
                           turn["rating"], c["rating"])
                for c in conversations for _, turn in sorted(self._turns[c["id"]].items())]
        for row in rows:  # a snapshot: turns stored meanwhile are not half in it
            yield row

    # -- helpers ----------------------------------------------------------------------------------
    def _conversation(self, conversation_id: str, tenant: str | None) -> dict[str, Any] | None:
        conversation = self._conversations.get(conversation_id)
        return conversation if conversation is not None and (tenant is None or conversation["tenant"] == tenant) else None

    def _find_turn(self, conversation_id: str, turn_index: int | None, turn_id: str | None, tenant: str | None) -> dict[str, Any] | None:
        if self._conversation(conversation_id, tenant) is None:
            return None
        turns = self._turns[conversation_id]
        if turn_index is not None:
            return turns.get(turn_index)
        return next((turn for turn in turns.values() if turn["turn_id"] == turn_id), None)

    def _delete(self, ids: list[str]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for conversation_id in ids:
            conversation = self._conversations.pop(conversation_id, None)
            if conversation is None:
                continue
            self._tokens.pop(conversation["token_hash"], None)
            counts["turns"] += len(self._turns.pop(conversation_id, {}))
            counts["states"] += int(self._states.pop(conversation_id, None) is not None)
            counts["conversations"] += 1
        return counts

    def _record(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any]) -> int:
        record = {"id": len(self._audit) + 1, **audit_record(action, actor, tenant, detail)}
        self._audit.append(record)
        return int(record["id"])
