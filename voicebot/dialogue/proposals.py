"""Proposal files: ``proposals/<name>.yaml`` in a domain folder, drafted from what customers asked
and the bot could not answer (``voicebot insights``, the dashboard), reviewed by a person, checked
by ``voicebot check`` and served after a domain reload. Delete the file to withdraw it.

Two kinds::

    proposal: intent              # a new intent, answered by its own response
    intent: gift_cards
    examples: {en: [do you sell gift cards?, ...], es: [...]}
    answer: {en: "Yes: gift cards of 10 to 200 euros are sold on our website.", es: "..."}

    proposal: article             # a new knowledge-base article
    article: {id: gift_cards, keywords: [gift card, voucher]}
    languages: {en: {title: Gift cards, body: ...}, es: {title: ..., body: ...}}
    examples_for: policy_question # a knowledge intent the topic's messages are taught to (optional)
    examples: {en: [...], es: [...]}

Merged into the domain as if written in domain.yaml, nlu/, responses/ and kb/; a language without
an answer or article falls back along the locale chain like any response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from voicebot.dialogue.domain import Domain, _Loader
    from voicebot.dialogue.yamlsource import YamlDoc

FOLDER = "proposals"
NAME_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArticleText(_Strict):
    title: str = Field(min_length=1)
    body: str = Field(min_length=1)


class ArticleId(_Strict):
    id: str = Field(pattern=NAME_PATTERN)
    keywords: list[str] = Field(default_factory=list)


class IntentProposal(_Strict):
    proposal: Literal["intent"]
    intent: str = Field(pattern=NAME_PATTERN)
    examples: dict[str, list[str]]
    answer: dict[str, str]
    source: dict[str, Any] = Field(default_factory=dict)  # the topic it came from (informative)


class ArticleProposal(_Strict):
    proposal: Literal["article"]
    article: ArticleId
    languages: dict[str, ArticleText]
    examples_for: str | None = None
    examples: dict[str, list[str]] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)


class _Either(BaseModel):
    item: IntentProposal | ArticleProposal = Field(discriminator="proposal")


def load_proposals(loader: _Loader, domain: Domain) -> None:
    """Merge every proposal file into ``domain``; problems go to the loader with file and line."""
    folder = domain.folder / FOLDER
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.yaml")):
        doc = loader.read(path)
        if doc is None:
            continue
        try:
            proposal = _Either.model_validate({"item": doc.data}).item
        except ValidationError as exc:
            for err in exc.errors():
                where = tuple(err["loc"][2:]) if len(err["loc"]) > 2 else ()
                loader.problem(doc, where, f"{'.'.join(map(str, where)) or 'proposal'}: {err['msg']}")
            continue
        if isinstance(proposal, IntentProposal):
            _merge_intent(loader, doc, domain, proposal)
        else:
            _merge_article(loader, doc, domain, proposal)


def _languages_known(loader: _Loader, doc: YamlDoc, domain: Domain, section: str, languages: list[str]) -> bool:
    unknown = [language for language in languages if language not in domain.languages]
    for language in unknown:
        loader.problem(doc, (section, language), f"{section}: {language!r} is not one of the domain's languages {domain.languages}")
    return not unknown


def _add_examples(loader: _Loader, doc: YamlDoc, domain: Domain, intent: str, examples: dict[str, list[str]]) -> None:
    if not _languages_known(loader, doc, domain, "examples", list(examples)):
        return
    for language, texts in examples.items():
        known = {text.strip().lower(): name for name, items in domain.examples.get(language, {}).items() for text in items}
        kept = domain.examples.setdefault(language, {}).setdefault(intent, [])
        for index, text in enumerate(texts):
            clash = known.get(text.strip().lower())
            if not text.strip():
                loader.problem(doc, ("examples", language, index), "an example must be non-empty text")
            elif clash is not None and clash != intent:
                loader.problem(doc, ("examples", language, index), f"example {text!r} is also an example of {clash!r}")
            else:
                kept.append(text.strip())


def _merge_intent(loader: _Loader, doc: YamlDoc, domain: Domain, proposal: IntentProposal) -> None:
    from voicebot.dialogue.domain import IntentSpec

    name = proposal.intent
    if name in domain.spec.intents:
        loader.problem(doc, ("intent",), f"intent {name!r} exists already in domain.yaml or another proposal")
        return
    if domain.spec.default_language not in proposal.answer:
        loader.problem(doc, ("answer",), f"answer needs at least the default language {domain.spec.default_language!r}")
        return
    if not _languages_known(loader, doc, domain, "answer", list(proposal.answer)):
        return
    if not any(proposal.examples.values()):
        loader.problem(doc, ("examples",), "a proposed intent needs examples")
        return
    domain.spec.intents[name] = IntentSpec(kind="smalltalk")  # answered by responses[name], like greet
    _add_examples(loader, doc, domain, name, proposal.examples)
    for language, text in proposal.answer.items():
        domain.responses.setdefault(language, {})[name] = text
    for language in domain.languages:
        if not domain.examples.get(language, {}).get(name):
            domain.examples.setdefault(language, {})[name] = []
            loader.problem(doc, ("examples",), f"intent {name!r} has no examples in {language}: messages in it are not recognised", "warning")


def _merge_article(loader: _Loader, doc: YamlDoc, domain: Domain, proposal: ArticleProposal) -> None:
    from voicebot.dialogue.domain import Article

    if not _languages_known(loader, doc, domain, "languages", list(proposal.languages)):
        return
    article_id = proposal.article.id
    for language in proposal.languages:
        if any(a.id == article_id for a in domain.articles.get(language, [])):
            loader.problem(doc, ("article", "id"), f"article {article_id!r} exists already in kb/{language}.yaml or another proposal")
            return
    for language, text in proposal.languages.items():
        domain.articles.setdefault(language, []).append(Article(article_id, language, text.title, list(proposal.article.keywords), text.body.strip()))
    if proposal.examples_for is not None:
        target = domain.spec.intents.get(proposal.examples_for)
        if target is None or target.kind != "knowledge":
            loader.problem(doc, ("examples_for",), f"examples_for must name a knowledge intent, not {proposal.examples_for!r}")
            return
        _add_examples(loader, doc, domain, proposal.examples_for, proposal.examples)
