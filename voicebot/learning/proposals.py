"""Drafting a proposal file (voicebot.dialogue.proposals) from an unanswered topic: its messages
become the examples, the operator gives the answer or the article. The file is checked with the
domain at once (what ``voicebot check`` reports); one with errors is not left in the folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from voicebot.dialogue.domain import Problem, load_domain
from voicebot.dialogue.proposals import FOLDER, ArticleProposal, IntentProposal
from voicebot.learning.insights import Topic


class ProposalRefused(Exception):
    """The draft cannot be written: the name is taken, or the domain would not load with it."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass
class Draft:
    path: Path
    problems: list[Problem]  # warnings of the domain with the proposal (no errors: it would be refused)


def examples_of(topic: Topic) -> dict[str, list[str]]:
    """The topic's distinct messages by language, in the order they were asked."""
    found: dict[str, list[str]] = {}
    for message in topic.messages:
        texts = found.setdefault(message["language"], [])
        if message["text"] not in texts:
            texts.append(message["text"])
    return found


def proposal_document(topic: Topic, kind: Literal["intent", "article"], name: str, *, answer: dict[str, str] | None = None,
                      articles: dict[str, dict[str, str]] | None = None, keywords: list[str] | None = None,
                      examples_for: str | None = None) -> dict[str, Any]:
    """The proposal as YAML data, validated by the same models the domain loader uses."""
    source = {"topic": topic.id, "size": topic.size, "languages": topic.languages, "reasons": topic.reasons,
              "first_seen": round(topic.first_seen), "last_seen": round(topic.last_seen), "drafted_at": round(time.time())}
    examples = examples_of(topic)
    if kind == "intent":
        document: dict[str, Any] = {"proposal": "intent", "intent": name, "examples": examples, "answer": answer or {}, "source": source}
        IntentProposal.model_validate(document)
    else:
        document = {"proposal": "article", "article": {"id": name, "keywords": keywords or []}, "languages": articles or {},
                    "source": source}
        if examples_for:
            document.update(examples_for=examples_for, examples=examples)
        ArticleProposal.model_validate(document)
    return document


def write_proposal(domain_folder: Path, name: str, document: dict[str, Any]) -> Draft:
    """Write ``proposals/<name>.yaml`` and check the domain with it; refused (and removed) when
    the domain would then have errors, so a reload never meets a broken draft."""
    folder = domain_folder / FOLDER
    path = folder / f"{name}.yaml"
    if path.exists():
        raise ProposalRefused(f"a proposal {name!r} exists already: {path}")
    folder.mkdir(exist_ok=True)
    header = (f"# Drafted from unanswered topic {document['source']['topic']} ({document['source']['size']} messages).\n"
              "# Review it, run `voicebot check` on the domain folder, then reload the domain (POST /api/domain/reload).\n"
              "# Delete this file to withdraw the proposal.\n")
    path.write_text(header + yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=120), encoding="utf-8")
    _, problems = load_domain(domain_folder, strict=False)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        path.unlink()
        raise ProposalRefused(f"the domain would not load with this proposal: {'; '.join(map(str, errors))}", errors)
    return Draft(path, [p for p in problems if Path(p.path) == path])
