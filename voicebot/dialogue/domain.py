"""Load and validate a domain folder (see docs/domain.md).

Validation collects *every* problem with its file and line rather than stopping at the first, so
an integrator fixes a domain in one pass (`voicebot check`).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voicebot.dialogue.proposals import load_proposals
from voicebot.dialogue.yamlsource import DomainFileError, YamlDoc, load_yaml

MIN_EXAMPLES_PER_INTENT = 15
# Responses a flow with `identify` needs; `<key>_<flow>` overrides `<key>` for one flow.
IDENTIFY_RESPONSES = ("identify_ask", "identify_refused", "identify_failed")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntentSpec(_Strict):
    kind: Literal["smalltalk", "flow", "knowledge", "handoff", "answer", "out_of_scope"]
    flow: str | None = None


class SlotSpec(_Strict):
    type: Literal["pattern", "email", "phone", "date", "enum"]
    pattern: str | None = None
    values: dict[str, dict[str, list[str]]] = Field(default_factory=dict)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return value


class IdentifySpec(_Strict):
    """Who may see a flow's data: the customer proves ownership of ``subject`` (the order id)
    with one of ``any_of`` (email, phone) before any action or preview reveals anything."""

    any_of: list[str] = Field(min_length=1)
    check: str  # action that answers outcome "verified" when the contact owns the subject
    subject: str | None = None  # defaults to the flow's first required slot
    max_attempts: int = Field(3, ge=1)  # failed checks per session before a human takes over


class FlowSpec(_Strict):
    required: list[str] = Field(default_factory=list)
    confirm: bool = False
    preview: str | None = None  # action whose result the confirmation question shows
    action: str | None = None
    identify: IdentifySpec | None = None

    def identify_subject(self) -> str | None:
        """The slot whose owner must be identified (the order id), if the flow guards one."""
        if self.identify is None:
            return None
        return self.identify.subject or (self.required[0] if self.required else None)


class ActionSpec(_Strict):
    python: str | None = None
    webhook: str | None = None
    timeout_s: float = 5.0


class HandoffSpec(_Strict):
    max_failed_turns: int = Field(2, ge=1)
    negative_sentiment: float = Field(-0.6, ge=-1, le=0)


class DomainSpec(_Strict):
    name: str
    languages: list[str] = Field(min_length=1)
    default_language: str
    intents: dict[str, IntentSpec]
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    flows: dict[str, FlowSpec] = Field(default_factory=dict)
    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    handoff: HandoffSpec = Field(default_factory=HandoffSpec)
    # language -> a sentence or two of what callers talk about, with the names they use: the
    # speech recogniser hears it before each utterance (Whisper's prompt), so "Kelvora" is heard
    # as the product, not "Culver". Spoken conversations only; chat text is not recognised.
    speech_context: dict[str, str] = Field(default_factory=dict)


@dataclass
class Article:
    id: str
    language: str
    title: str
    keywords: list[str]
    body: str


@dataclass
class Problem:
    path: Path
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


@dataclass
class Domain:
    folder: Path
    spec: DomainSpec
    examples: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # lang -> intent -> texts
    articles: dict[str, list[Article]] = field(default_factory=dict)  # lang -> articles
    responses: dict[str, dict[str, str | list[str]]] = field(default_factory=dict)  # lang -> key -> template

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def languages(self) -> list[str]:
        return self.spec.languages


class DomainError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:
        return {"<malformed>"}


class _Loader:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[Problem] = []

    def problem(self, doc: YamlDoc | Path, loc: tuple[Any, ...], message: str, severity: Literal["error", "warning"] = "error") -> None:
        if isinstance(doc, YamlDoc):
            self.problems.append(Problem(doc.path, doc.line(*loc), message, severity))
        else:
            self.problems.append(Problem(doc, 1, message, severity))

    def read(self, path: Path) -> YamlDoc | None:
        if not path.is_file():
            self.problem(path, (), "file is missing")
            return None
        try:
            return load_yaml(path)
        except DomainFileError as exc:
            self.problems.append(Problem(exc.path, exc.line or 1, exc.message))
            return None

    def load(self) -> Domain | None:
        doc = self.read(self.folder / "domain.yaml")
        if doc is None:
            return None
        try:
            spec = DomainSpec.model_validate(doc.data)
        except ValidationError as exc:
            for err in exc.errors():
                self.problem(doc, tuple(err["loc"]), f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
            return None
        domain = Domain(folder=self.folder, spec=spec)
        self.check_references(doc, spec)
        for language in spec.languages:
            self.load_examples(domain, language)
            self.load_articles(domain, language)
            self.load_responses(domain, language)
        load_proposals(self, domain)  # proposals/*.yaml: drafted from unanswered topics (voicebot.dialogue.proposals)
        self.check_cross_language(domain)
        return domain

    def check_references(self, doc: YamlDoc, spec: DomainSpec) -> None:
        if spec.default_language not in spec.languages:
            self.problem(doc, ("default_language",), f"default_language {spec.default_language!r} is not in languages")
        for name, intent in spec.intents.items():
            if intent.kind == "flow" and (intent.flow is None or intent.flow not in spec.flows):
                self.problem(doc, ("intents", name), f"intent {name!r} names flow {intent.flow!r}, which is not defined under flows")
        for name, flow in spec.flows.items():
            for slot in flow.required:
                if slot not in spec.slots:
                    self.problem(doc, ("flows", name, "required"), f"flow {name!r} requires slot {slot!r}, which is not defined under slots")
            for field_name in ("action", "preview"):
                action = getattr(flow, field_name)
                if action and action not in spec.actions:
                    self.problem(doc, ("flows", name, field_name), f"flow {name!r} calls action {action!r}, which is not defined under actions")
            if flow.identify is not None:
                self.check_identify(doc, spec, name, flow)
        for name, slot in spec.slots.items():
            if slot.type == "pattern" and not slot.pattern:
                self.problem(doc, ("slots", name), f"slot {name!r} of type pattern needs a pattern")
            if slot.type == "enum":
                if not slot.values:
                    self.problem(doc, ("slots", name), f"enum slot {name!r} needs values")
                for value, synonyms in slot.values.items():
                    for language in spec.languages:
                        if not synonyms.get(language):
                            self.problem(doc, ("slots", name, "values", value), f"enum value {value!r} of slot {name!r} has no synonyms in {language!r}")
        for language in spec.speech_context:
            if language not in spec.languages:
                # Not an error: a domain answering in English still hears callers in other languages
                # (cross-lingual understanding), and their speech benefits from a context too.
                self.problem(doc, ("speech_context", language), f"speech_context names {language!r}, which is not in languages: "
                             "it is used only when a caller speaks it", severity="warning")
        for name, action in spec.actions.items():
            if bool(action.python) == bool(action.webhook):
                self.problem(doc, ("actions", name), f"action {name!r} needs exactly one of python or webhook")
            elif action.python:
                file_name, _, function = action.python.partition(":")
                source = self.folder / file_name
                if not function:
                    self.problem(doc, ("actions", name, "python"), f"action {name!r}: write python as 'file.py:function'")
                elif not source.is_file():
                    self.problem(doc, ("actions", name, "python"), f"action {name!r}: {source} does not exist")
                elif not re.search(rf"^(async\s+)?def\s+{re.escape(function)}\s*\(", source.read_text(encoding="utf-8"), re.M):
                    self.problem(doc, ("actions", name, "python"), f"action {name!r}: no function {function!r} in {file_name}")

    def check_identify(self, doc: YamlDoc, spec: DomainSpec, name: str, flow: FlowSpec) -> None:
        identify = flow.identify
        assert identify is not None
        where = ("flows", name, "identify")
        for index, slot in enumerate(identify.any_of):
            if slot not in spec.slots:
                self.problem(doc, (*where, "any_of", index), f"flow {name!r} identifies with slot {slot!r}, which is not defined under slots")
            elif slot in flow.required:
                self.problem(doc, (*where, "any_of", index), f"flow {name!r}: {slot!r} is both required and an identifying slot; list it in one place")
        if identify.check not in spec.actions:
            self.problem(doc, (*where, "check"), f"flow {name!r} checks identity with action {identify.check!r}, which is not defined under actions")
        subject = flow.identify_subject()
        if subject is None:
            self.problem(doc, where, f"flow {name!r} identifies the customer but requires no slot to identify them for; add subject or required")
        elif subject not in flow.required:
            self.problem(doc, (*where, "subject") if identify.subject else where,
                         f"flow {name!r}: identification subject {subject!r} must be one of the flow's required slots")
        elif subject in identify.any_of:
            self.problem(doc, (*where, "subject"), f"flow {name!r}: {subject!r} cannot identify itself")

    def _check_language_field(self, doc: YamlDoc, language: str) -> bool:
        if not isinstance(doc.data, dict):
            self.problem(doc, (), "the file must hold a mapping")
            return False
        if doc.data.get("language") != language:
            self.problem(doc, ("language",), f"language must be {language!r} in this file")
        return True

    def load_examples(self, domain: Domain, language: str) -> None:
        doc = self.read(self.folder / "nlu" / f"{language}.yaml")
        if doc is None or not self._check_language_field(doc, language):
            return
        intents = doc.data.get("intents")
        if not isinstance(intents, dict):
            self.problem(doc, ("intents",), "intents must map intent names to lists of examples")
            return
        result: dict[str, list[str]] = {}
        seen: dict[str, str] = {}
        for intent, examples in intents.items():
            if intent not in domain.spec.intents:
                self.problem(doc, ("intents", intent), f"intent {intent!r} is not declared in domain.yaml")
                continue
            if not isinstance(examples, list):
                self.problem(doc, ("intents", intent), f"examples of {intent!r} must be a list")
                continue
            texts: list[str] = []
            for index, example in enumerate(examples):
                if not isinstance(example, str) or not example.strip():
                    self.problem(doc, ("intents", intent, index), f"example {index + 1} of {intent!r} must be non-empty text (quote numbers and yes/no)")
                    continue
                key = example.strip().lower()
                if key in seen and seen[key] != intent:
                    self.problem(doc, ("intents", intent, index), f"example {example!r} is also an example of {seen[key]!r}")
                seen[key] = intent
                texts.append(example.strip())
            if len(texts) < MIN_EXAMPLES_PER_INTENT:
                self.problem(doc, ("intents", intent), f"intent {intent!r} has {len(texts)} examples in {language}; at least {MIN_EXAMPLES_PER_INTENT} are needed", "warning")
            result[intent] = texts
        for intent in domain.spec.intents:
            if intent not in result:
                self.problem(doc, ("intents",), f"intent {intent!r} has no examples in {language}")
        domain.examples[language] = result

    def load_articles(self, domain: Domain, language: str) -> None:
        path = self.folder / "kb" / f"{language}.yaml"
        wants_kb = any(intent.kind == "knowledge" for intent in domain.spec.intents.values())
        if not path.exists() and not wants_kb:
            return
        doc = self.read(path)
        if doc is None or not self._check_language_field(doc, language):
            return
        articles = doc.data.get("articles")
        if not isinstance(articles, list):
            self.problem(doc, ("articles",), "articles must be a list")
            return
        loaded: list[Article] = []
        for index, item in enumerate(articles):
            if not isinstance(item, dict):
                self.problem(doc, ("articles", index), "an article must be a mapping with id, title, keywords, body")
                continue
            missing = [key for key in ("id", "title", "body") if not isinstance(item.get(key), str) or not item.get(key)]
            if missing:
                self.problem(doc, ("articles", index), f"article {index + 1} lacks {', '.join(missing)}")
                continue
            keywords = item.get("keywords", [])
            if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
                self.problem(doc, ("articles", index, "keywords"), "keywords must be a list of text")
                keywords = []
            loaded.append(Article(item["id"], language, item["title"], keywords, item["body"].strip()))
        domain.articles[language] = loaded

    def load_responses(self, domain: Domain, language: str) -> None:
        doc = self.read(self.folder / "responses" / f"{language}.yaml")
        if doc is None or not self._check_language_field(doc, language):
            return
        responses = doc.data.get("responses")
        if not isinstance(responses, dict):
            self.problem(doc, ("responses",), "responses must map keys to templates")
            return
        clean: dict[str, str | list[str]] = {}
        for key, template in responses.items():
            variants = template if isinstance(template, list) else [template]
            if not variants or not all(isinstance(v, str) and v.strip() for v in variants):
                self.problem(doc, ("responses", key), f"response {key!r} must be text or a list of text")
                continue
            for variant in variants:
                if "<malformed>" in _placeholders(variant):
                    self.problem(doc, ("responses", key), f"response {key!r} has unbalanced braces")
            clean[key] = template
        spec = domain.spec
        needed = [name for name, intent in spec.intents.items() if intent.kind == "smalltalk"]
        for flow_name, flow in spec.flows.items():
            needed += [f"ask_{slot}" for slot in flow.required]
            if flow.confirm:
                needed += [f"confirm_{flow_name}", f"{flow_name}_declined"]
            if flow.identify is not None:
                needed += [key for key in IDENTIFY_RESPONSES if f"{key}_{flow_name}" not in clean]
        if any(intent.kind == "knowledge" for intent in spec.intents.values()):
            needed.append("kb_answer")
        for key in dict.fromkeys(needed):
            if key not in clean:
                self.problem(doc, ("responses",), f"response {key!r} is missing in {language}")
        domain.responses[language] = clean

    def check_cross_language(self, domain: Domain) -> None:
        ids = {language: {a.id for a in articles} for language, articles in domain.articles.items()}
        every = set().union(*ids.values()) if ids else set()
        for language, present in ids.items():
            for missing in sorted(every - present):
                self.problem(self.folder / "kb" / f"{language}.yaml", (), f"article {missing!r} exists in another language but not in {language} (the fallback language will be used)", "warning")


def load_domain(folder: Path, *, strict: bool = True) -> tuple[Domain | None, list[Problem]]:
    """Load a domain folder; return it with every problem found (errors and warnings)."""
    loader = _Loader(Path(folder))
    domain = loader.load()
    errors = [p for p in loader.problems if p.severity == "error"]
    if strict and errors:
        raise DomainError(loader.problems)
    return domain, loader.problems
