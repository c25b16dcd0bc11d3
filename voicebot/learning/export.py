"""Stored conversations -> a JSONL training set for the response generator.

Every bot turn's trace keeps the ``prompt_fields`` the generator was (or would have been) given;
``build_prompt`` turns them into the exact input format the runtime serves, and what the bot said is
the target. Customers' ratings decide what is worth learning from: turns rated thumbs-down are left
out by default. Personal data is redacted in input and target alike (the same value gets the same
placeholder in both, so the model learns to copy placeholders, not to invent contact details), and
conversations are named only by a hash of their id.

Rows come from the configured storage backend (``Storage.export_turns``), opened with the same
keys as the server, so encrypted conversations read in clear; transcripts already redacted when
they were stored keep their placeholders, and the report counts every placeholder in what it
wrote, masked then or now. The backend reads beside a running server; none of the runtime is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicebot.dialogue.grounding import PromptFields, build_prompt
from voicebot.privacy.redaction import redact_many

if TYPE_CHECKING:
    from voicebot.storage.base import Storage

BUILT_IN_KINDS = ("email", "phone", "card", "iban")


@dataclass
class ExportOptions:
    min_turn_rating: int = 0  # rated turns below this are left out; -1 keeps every rated turn
    include_unrated: bool = True
    extra_patterns: Mapping[str, str] = field(default_factory=dict)
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


async def export_dataset(storage: Storage, out: Path, options: ExportOptions | None = None) -> ExportReport:
    """Write the training set from an open ``storage`` to ``out`` (replaced atomically) and report what went in."""
    report = ExportReport()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        async for line in iter_examples(storage, options or ExportOptions(), report):
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    return report


async def iter_examples(storage: Storage, options: ExportOptions, report: ExportReport) -> AsyncIterator[dict[str, Any]]:
    kinds = {*BUILT_IN_KINDS, *options.extra_patterns, *options.stored_pattern_names}
    placeholder = re.compile("<(" + "|".join(sorted(re.escape(kind.upper()) for kind in kinds)) + ")>")
    async for row in storage.export_turns():
        report.bot_turns += 1
        fields_data = (row.trace.get("response") or {}).get("prompt_fields")
        if not fields_data:
            report.skipped["without prompt fields"] += 1
            continue
        rating = row.turn_rating
        if rating is None and not options.include_unrated:
            report.skipped["unrated"] += 1
            continue
        if rating is not None and rating < options.min_turn_rating:
            report.skipped[f"rated {rating}"] += 1
            continue
        fields = PromptFields.from_dict(fields_data)
        (prompt, target), _ = redact_many([build_prompt(fields), row.bot_text], options.extra_patterns)
        report.redactions.update(match.lower() for text in (prompt, target) for match in placeholder.findall(text))
        report.written += 1
        report.conversations.add(row.conversation_id)
        yield {
            "input": prompt, "target": target, "language": row.language, "intent": row.intent, "path": row.path,
            "turn_rating": rating, "conversation_rating": row.conversation_rating,
            "conversation": conversation_key(row.conversation_id),
        }
