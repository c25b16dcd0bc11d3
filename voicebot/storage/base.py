"""The storage contract: what the runtime, the REST API, privacy and the export may rely on.

Every backend (the built-in SQLite one, an integrator's ``package.module:Class`` or a
``voicebot.storage`` entry point) implements ``Storage``; the rest of the code knows stored data
only through these methods, so no SQL lives outside a backend. The guarantees that matter most:

- *A turn and the state after it are committed together* (``save_turn``): after a crash either
  both are there or neither is. ``save_turn`` returns only once the turn is durable, and the bot
  message is sent to the client only after it returned, so nothing a customer saw is lost.
- *Stored text goes through the sealer* (``voicebot.privacy.sealing``): transcripts, traces and
  comments are redacted as the sealer says before they are stored; the dialogue state is not
  redacted (a resumed conversation needs the real values). Encryption protects data at rest: a
  backend that keeps something on disk encrypts it as the sealer says.
- *Tenants are separate*: a method given a ``tenant`` neither reads nor changes another tenant's
  rows, and answers as if they did not exist.
- *Deletions are audited in the same commit* (retention, erasure, key rotation): the record holds
  counts and ids only (``voicebot.privacy.audit``), never the deleted data.

Methods are coroutines and must not block the event loop. ``open`` comes first, ``close`` last.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voicebot.core.session import DialogueState
    from voicebot.privacy.sealing import Sealer
    from voicebot.storage.analytics import AnalyticsQuery

TURN_RATINGS = (-1, 1)
CONVERSATION_RATINGS = range(1, 6)

# The keys of what ``list_conversations`` / ``get_conversation`` return for a conversation and a turn.
CONVERSATION_KEYS = ("id", "tenant", "channel", "user_id", "language", "status", "turn_count", "created_at", "updated_at", "rating",
                     "feedback")
TURN_KEYS = ("turn_index", "turn_id", "user_text", "bot_text", "language", "intent", "path", "trace", "created_at", "rating", "feedback",
             "interrupted", "delivered_text")
# What ``resume`` returns about the conversation beside its state.
RESUME_KEYS = ("id", "channel", "user_id", "language", "status", "turn_count", "tenant")


def hash_token(token: str) -> str:
    """A resume token is stored only as its hash: a copy of the store cannot resume anyone."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_turn_rating(rating: int, turn_index: int | None, turn_id: str | None) -> None:
    """The arguments of ``rate_turn`` every backend refuses alike (ValueError)."""
    if rating not in TURN_RATINGS:
        raise ValueError(f"a message rating is -1 or 1, not {rating!r}")
    if (turn_index is None) == (turn_id is None):
        raise ValueError("name the turn by turn_index or by turn_id (exactly one)")


def check_conversation_rating(rating: int) -> None:
    if rating not in CONVERSATION_RATINGS:
        raise ValueError(f"a conversation rating is 1..5, not {rating!r}")


@dataclass
class StoredTurn:
    """One answered turn as the persistence stage hands it to ``save_turn`` (text in clear)."""

    conversation_id: str
    turn_index: int
    turn_id: str
    user_text: str
    bot_text: str
    language: str
    intent: str | None
    path: str
    trace: dict[str, Any]


@dataclass(frozen=True)
class ExportTurn:
    """One bot turn for the training-set export (``voicebot export-dataset``), in clear."""

    conversation_id: str
    bot_text: str
    language: str
    intent: str | None
    path: str
    trace: dict[str, Any]
    turn_rating: int | None
    conversation_rating: int | None


class Storage(Protocol):
    """What a storage backend does. Built by the registry as
    ``Class.from_options(options, data_dir=..., sealer=...)`` (``[storage]`` section)."""

    sealer: Sealer  # redaction and encryption of stored text; the runtime reads its patterns too

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        """Connect and create or upgrade what the backend needs. Raises ``EncryptionKeyError``
        (naming the setting) when the sealer's keys cannot read what is stored, so a wrong key
        fails at start, not at the first resume. ``create=False`` (tools: export, rotate-keys):
        ``FileNotFoundError`` instead of creating an empty store where none is."""

    async def close(self) -> None:
        """Finish pending writes (a submitted turn is still stored), then disconnect."""

    # -- conversations, turns, dialogue state ------------------------------------------------------
    async def create_conversation(self, conversation_id: str, token: str, channel: str, language: str, user_id: str | None,
                                  state: DialogueState, tenant: str = "default") -> None:
        """A new conversation with its first state, findable by ``resume(token)``; a known
        customer (``user_id``) gets a profile, created on first contact."""

    async def resume(self, token: str) -> tuple[dict[str, Any], DialogueState] | None:
        """The conversation (``RESUME_KEYS``) and its last committed state for a resume token, or None."""

    async def save_turn(self, turn: StoredTurn, state: DialogueState, status: str) -> None:
        """Store a turn (sealed) and the state after it atomically, and set the conversation's
        status, language and turn count; the customer's profile keeps the language last used.
        Returns once committed: the caller sends the bot message only then. Saving the same
        turn index again replaces it. An error here fails this turn only."""

    async def end_conversation(self, conversation_id: str) -> None:
        """Mark it ended (a conversation handed off to a human keeps that status)."""

    async def record_interruption(self, conversation_id: str, turn_id: str, delivered_text: str) -> bool:
        """A caller barged in: keep (sealed) what they heard beside what the bot meant to say;
        False when there is no such turn."""

    async def get_profile(self, user_id: str) -> dict[str, Any] | None:
        """``{user_id, display_name, preferred_language, data, created_at, updated_at}``, in clear."""

    # -- feedback ---------------------------------------------------------------------------------
    async def rate_turn(self, conversation_id: str, *, turn_index: int | None = None, turn_id: str | None = None,
                        rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate one bot message (-1 or 1, ``check_turn_rating``), named by index or live turn id;
        a new rating replaces the previous one and its comment (sealed). False when there is no
        such turn (in ``tenant``)."""

    async def rate_conversation(self, conversation_id: str, *, rating: int, comment: str | None = None, tenant: str | None = None) -> bool:
        """Rate a whole conversation (1..5 stars); False when there is no such conversation."""

    # -- reading (REST API, tests) -----------------------------------------------------------------
    async def list_conversations(self, limit: int, offset: int, tenant: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """``(total, page)`` of conversations (``CONVERSATION_KEYS``), most recently updated first."""

    async def get_conversation(self, conversation_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """One conversation with ``turns`` (``TURN_KEYS``, in index order, text in clear as
        sealed: redacted) and ``state`` (a dict); None when unknown or another tenant's."""

    # -- the agents' queue (voicebot.agents) -------------------------------------------------------
    async def set_status(self, conversation_id: str, status: str, tenant: str | None = None) -> bool:
        """Set a conversation's status (the agents' desk: ``callback`` requested, ``closed`` by an
        agent, ``active`` again with the bot); False when unknown (in ``tenant``). ``end_conversation``
        keeps ``handed_off`` and ``callback``: they still wait for a person."""

    async def list_by_status(self, statuses: Collection[str], tenant: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` conversations (``CONVERSATION_KEYS``) whose status is in ``statuses``,
        most recently updated first: the stored part of the agents' queue."""

    async def list_customer_conversations(self, user_id: str, tenant: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` of one customer's conversations (``CONVERSATION_KEYS``), newest created
        first: the console's customer view."""

    async def analytics(self, query: AnalyticsQuery) -> dict[str, list[tuple[Any, ...]]]:
        """The dashboard's aggregates of the turns created in the query's period (and tenant):
        ``voicebot.storage.analytics.ANALYTICS_KEYS`` says each key's rows. Count in the
        database; only aggregates come back. A turn's countable facts are ``turn_facts`` of it,
        stored beside it by ``save_turn``."""

    async def unanswered_turns(self, query: AnalyticsQuery, limit: int) -> list[dict[str, Any]]:
        """Turns of the period the bot could not answer (``turn_facts(...).unanswered``) or that
        were rated down (reason ``rated_down``), newest first, at most ``limit``: dicts of
        ``voicebot.storage.analytics.UNANSWERED_COLUMNS``, ``user_text`` as sealed (redacted), in clear."""

    async def count_turns(self) -> int:
        """Every stored turn (health, tests)."""

    async def integrity_ok(self) -> bool:
        """The backend's own consistency check passes (after a fault, say)."""

    # -- privacy: retention, erasure, audit, key rotation ------------------------------------------
    async def delete_conversations_older_than(self, seconds: float, *, keep: Collection[str] = (), actor: str = "retention") -> int:
        """Delete conversations (turns, state) not updated for ``seconds`` except ``keep`` (live
        sessions), then profiles idle as long whose customer has no conversation left; each
        deletion committed with its audit records (one per tenant, ``privacy.deletion``).
        Returns the number of conversations deleted. Deleted means gone from disk too."""

    async def erase_customer(self, user_id: str, tenant: str | None = None, *, actor: str = "api") -> dict[str, Any]:
        """Delete one customer's conversations (of ``tenant`` when given), turns, states and
        profile (kept while another tenant still has conversations of them), with one audit
        record naming them by hash. Returns counts (conversations, turns, states, profiles),
        ``audit_id`` and ``wiped`` (no copy of the deleted data is left on disk)."""

    async def write_audit(self, action: str, actor: str, tenant: str | None, detail: dict[str, Any] | None = None) -> int:
        """Record an action (``privacy.audit.audit_record`` refuses free text); its id."""

    async def list_audit(self, tenant: str | None, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        """``(total, page)`` of audit records ``{id, at, action, actor, tenant, detail}``, newest
        first; only ``tenant``'s when given, every record when None."""

    async def rotate_encryption(self, *, actor: str = "cli") -> dict[str, int]:
        """Re-encrypt every stored value under the sealer's newest key (and encrypt plaintext
        when encryption is on) so older keys can be retired; audited. Counts: reencrypted,
        encrypted, current. Safe to run again after an interruption."""

    # -- the training-set export -------------------------------------------------------------------
    def export_turns(self) -> AsyncIterator[ExportTurn]:
        """Every bot turn with its ratings, in clear, by conversation (oldest first) then turn
        index. Streams (no need to hold the store in memory) and does not block writers: the
        export runs beside a live server."""


# What the registry checks on a backend class before building it (voicebot/plugins.py).
STORAGE_METHODS: tuple[str, ...] = tuple(name for name, value in vars(Storage).items() if callable(value) and not name.startswith("_"))
