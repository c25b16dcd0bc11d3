"""``/api/insights``: what customers asked that the bot could not answer, grouped into topics
(``GET /api/insights/unanswered``, scope ``transcripts:read``: it shows what they wrote, redacted
as stored), and drafting a new intent or article from a topic (``POST /api/insights/proposals``,
scope ``domain:manage``): a proposal file in the tenant's domain folder, live after
``POST /api/domain/reload``."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from voicebot.access.http import Caller, requires
from voicebot.api.analytics import DAY_S, period_query
from voicebot.api.common import BAD_BODY
from voicebot.core.runtime import BotRuntime, tenant_domains
from voicebot.dialogue.proposals import NAME_PATTERN
from voicebot.learning.insights import Insights, Method, Topic, unanswered_topics
from voicebot.learning.proposals import ProposalRefused, proposal_document, write_proposal

MAX_CONVERSATIONS_LISTED = 20


class TopicOut(BaseModel):
    id: str
    size: int
    languages: dict[str, int]
    reasons: dict[str, int]
    examples: list[str]
    first_seen: float
    last_seen: float
    conversations: list[str]  # where to read them (at most 20)


class UnansweredTopics(BaseModel):
    tenant: str | None
    since: float
    until: float
    method: str  # encoder (multilingual sentence vectors) or ngrams
    turns: int
    topics: list[TopicOut]


class ArticleText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)


class ProposalRequest(BaseModel):
    """A draft from topic ``topic_id`` (found in the same period as the topics were listed)."""

    model_config = ConfigDict(extra="forbid")
    topic_id: str = Field(min_length=1, max_length=64)
    kind: Literal["intent", "article"]
    name: str = Field(pattern=NAME_PATTERN, description="the new intent's or article's id")
    answer: dict[str, str] | None = Field(None, description="intent: what the bot says, by language (the default one at least)")
    articles: dict[str, ArticleText] | None = Field(None, description="article: title and body by language")
    keywords: list[str] = Field(default_factory=list, max_length=50)
    examples_for: str | None = Field(None, description="article: a knowledge intent the topic's messages are taught to")
    since: float | None = Field(None, alias="from", ge=0, le=1e11)
    until: float | None = Field(None, alias="to", ge=0, le=1e11)


class ProposalWritten(BaseModel):
    file: str
    warnings: list[str]
    next: str


def topic_out(topic: Topic) -> TopicOut:
    conversations = list(dict.fromkeys(m["conversation_id"] for m in topic.messages))[:MAX_CONVERSATIONS_LISTED]
    return TopicOut(id=topic.id, size=topic.size, languages=topic.languages, reasons=topic.reasons, examples=topic.examples,
                    first_seen=topic.first_seen, last_seen=topic.last_seen, conversations=conversations)


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    def tenant_of(caller: Caller, *, required: bool) -> str | None:
        tenant = caller.tenant if caller.tenant is not None or not required else runtime.access.default_tenant()
        if tenant is not None and tenant not in runtime.engines:
            raise HTTPException(404, f"this server hosts no tenant {tenant!r}")
        return tenant

    async def topics(since: float | None, until: float | None, tenant: str | None, method: Method = "auto",
                     min_size: int = 2) -> tuple[Insights, float, float]:
        until = time.time() if until is None else until
        query = period_query(until - 30 * DAY_S if since is None else since, until, None, tenant)
        return await unanswered_topics(runtime.storage, query, method=method, min_size=min_size), query.since, query.until

    @api.get("/api/insights/unanswered", response_model=UnansweredTopics, tags=["insights"],
             responses={404: {"description": "no such tenant"}, 422: {"description": "a period that makes no sense"}})
    async def unanswered(since: float | None = Query(None, alias="from", ge=0, le=1e11, description="epoch seconds; default: 'to' - 30 days"),
                         until: float | None = Query(None, alias="to", ge=0, le=1e11, description="epoch seconds; default: now"),
                         min_size: int = Query(2, ge=1, le=1000, description="the fewest messages a topic has"),
                         method: Method = Query("auto", description="auto: the sentence encoder when installed, else ngrams"),
                         caller: Caller = Depends(requires("transcripts:read"))) -> UnansweredTopics:
        """Turns that fell back, were out of scope, found no article, were handed off after
        repeated failures or were rated down, grouped by meaning (across languages with the
        encoder) into topics, largest first; examples as stored (redacted)."""
        tenant = tenant_of(caller, required=False)
        found, start, end = await topics(since, until, tenant, method, min_size)
        return UnansweredTopics(tenant=tenant, since=start, until=end, method=found.method, turns=found.turns,
                                topics=[topic_out(t) for t in found.topics])

    @api.post("/api/insights/proposals", response_model=ProposalWritten, status_code=201, tags=["insights"],
              responses={404: {"description": "no such tenant, or no such topic in the period"}, 409: {"description": "a proposal of that name exists"},
                         422: {"description": "the domain would not load with the proposal"}, **BAD_BODY})
    async def propose(body: ProposalRequest, caller: Caller = Depends(requires("domain:manage"))) -> ProposalWritten:
        """Write ``proposals/<name>.yaml`` in the tenant's domain folder from a topic's messages;
        checked like ``voicebot check``; served after ``POST /api/domain/reload``."""
        tenant = tenant_of(caller, required=True)
        assert tenant is not None
        found, _, _ = await topics(body.since, body.until, tenant, min_size=1)
        topic = next((t for t in found.topics if t.id == body.topic_id), None)
        if topic is None:
            raise HTTPException(404, f"no unanswered topic {body.topic_id!r} in the period")
        try:
            document = proposal_document(topic, body.kind, body.name, answer=body.answer, keywords=body.keywords,
                                         articles={k: v.model_dump() for k, v in (body.articles or {}).items()}, examples_for=body.examples_for)
        except ValueError as exc:  # pydantic's ValidationError: an answer or article missing
            raise HTTPException(422, str(exc)) from None
        try:
            draft = write_proposal(tenant_domains(runtime.settings)[tenant], body.name, document)
        except ProposalRefused as exc:
            raise HTTPException(409 if not exc.problems else 422, str(exc)) from None
        return ProposalWritten(file=str(draft.path), warnings=[str(p) for p in draft.problems],
                               next="review the file, then POST /api/domain/reload")

    return api
