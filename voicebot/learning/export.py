"""Stored conversations -> a JSONL training set for the response generator.

Every bot turn's trace keeps the ``prompt_fields`` the generator was (or would have been) given;
``build_prompt`` turns them into the exact input format the runtime serves, and what the bot said is
the target. Customers' ratings decide what is worth learning from: turns rated thumbs-down are left
out by default. Personal data is redacted in input and target alike (the same value gets the same
placeholder in both, so the model learns to copy placeholders, not to invent contact details), and
conversations are named only by a hash of their id.

A database written with encryption at rest is read with the same keys as the server
(``ExportOptions.cipher``); transcripts already redacted when they were stored keep their
placeholders, and the report counts every placeholder in what it wrote, masked then or now.

Reads the SQLite file directly and read-only, so it works while the server runs (WAL) and needs
none of the runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebot.dialogue.grounding import PromptFields, build_prompt
from voicebot.privacy.crypto import TextCipher
from voicebot.privacy.redaction import redact_many

BUILT_IN_KINDS = ("email", "phone", "card", "iban")


@dataclass
class ExportOptions:
    min_turn_rating: int = 0  # rated turns below this are left out; -1 keeps every rated turn
    include_unrated: bool = True
    extra_patterns: Mapping[str, str] = field(default_factory=dict)
    cipher: TextCipher | None = None  # the server's keys (privacy.*) when its data is encrypted
    stored_pattern_names: tuple[str, ...] = ()  # privacy.extra_patterns names: their placeholders count too


@dataclass
class ExportReport:
    bot_turns: int = 0
    written: int = 0
    conversations: set[str] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)

    def summary(self, out: Path) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.redactions.items()))
        conversations = len(self.conversations)
        return (f"wrote {self.written} lines to {out} from {self.bot_turns} bot turns; {conversations} conversation{'s' * (conversations != 1)} "
                f"(skipped: {skipped})\nredactions: {sum(self.redactions.values())}" + (f" ({kinds})" if kinds else ""))


def conversation_key(conversation_id: str) -> str:
    """A stable pseudonym: groups a conversation's lines without naming it."""
    return hashlib.sha256(conversation_id.encode()).hexdigest()[:16]


def export_dataset(db_path: Path, out: Path, options: ExportOptions | None = None) -> ExportReport:
    """Write the training set to ``out`` (replaced atomically) and report what went in."""
    report = ExportReport()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for line in iter_examples(db_path, options or ExportOptions(), report):
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    return report


def iter_examples(db_path: Path, options: ExportOptions, report: ExportReport) -> Iterator[dict[str, Any]]:
    kinds = {*BUILT_IN_KINDS, *options.extra_patterns, *options.stored_pattern_names}
    placeholder = re.compile("<(" + "|".join(sorted(re.escape(kind.upper()) for kind in kinds)) + ")>")
    for row in _bot_turns(db_path, options.cipher or TextCipher([], "no key (export-dataset reads the server's privacy.* keys)")):
        report.bot_turns += 1
        fields_data = (row["trace"].get("response") or {}).get("prompt_fields")
        if not fields_data:
            report.skipped["without prompt fields"] += 1
            continue
        rating = row["turn_rating"]
        if rating is None and not options.include_unrated:
            report.skipped["unrated"] += 1
            continue
        if rating is not None and rating < options.min_turn_rating:
            report.skipped[f"rated {rating}"] += 1
            continue
        fields = PromptFields.from_dict(fields_data)
        (prompt, target), _ = redact_many([build_prompt(fields), row["bot_text"]], options.extra_patterns)
        report.redactions.update(match.lower() for text in (prompt, target) for match in placeholder.findall(text))
        report.written += 1
        report.conversations.add(row["conversation_id"])
        yield {
            "input": prompt, "target": target, "language": row["language"], "intent": row["intent"], "path": row["path"],
            "turn_rating": rating, "conversation_rating": row["conversation_rating"],
            "conversation": conversation_key(row["conversation_id"]),
        }


def _bot_turns(db_path: Path, cipher: TextCipher) -> Iterator[dict[str, Any]]:
    if not db_path.is_file():
        raise FileNotFoundError(f"no conversation database at {db_path}")
    db = _connect_read_only(db_path)
    try:
        # A database from before feedback existed has no rating columns: its turns are unrated.
        turn_rating = "t.rating" if _has_column(db, "turns", "rating") else "NULL"
        conversation_rating = "c.rating" if _has_column(db, "conversations", "rating") else "NULL"
        rows = db.execute(
            f"SELECT t.conversation_id, t.bot_text, t.language, t.intent, t.path, t.trace, {turn_rating}, {conversation_rating} "
            "FROM turns t JOIN conversations c ON c.id = t.conversation_id ORDER BY c.created_at, c.id, t.turn_index"
        )
        keys = ("conversation_id", "bot_text", "language", "intent", "path", "trace", "turn_rating", "conversation_rating")
        for values in rows:
            row = dict(zip(keys, values, strict=True))
            row["bot_text"] = cipher.decrypt(row["bot_text"])
            row["trace"] = json.loads(cipher.decrypt(row["trace"]))
            yield row
    finally:
        db.close()


def _connect_read_only(db_path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        # SQLite before 3.22 cannot open a WAL database read-only once its -shm file is gone
        # (after a clean shutdown); a plain connection that only reads does no harm.
        return sqlite3.connect(db_path)


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))
