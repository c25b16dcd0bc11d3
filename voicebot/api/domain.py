"""``/api/domain``: the tenant's domain as served (languages, intents, knowledge base) and
reloading it after an edit without a restart. Scope ``domain:manage``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from voicebot.access.http import Caller, requires
from voicebot.core.runtime import BotRuntime, DomainProblems


class KnowledgeArticle(BaseModel):
    id: str
    language: str
    title: str


class DomainInfo(BaseModel):
    tenant: str
    name: str
    languages: list[str]
    intents: list[str]
    knowledge: list[KnowledgeArticle]


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()

    def domain_tenant(caller: Caller) -> str:
        tenant = caller.tenant or runtime.access.default_tenant()
        if tenant not in runtime.engines:  # an operator key may name any ?tenant=
            raise HTTPException(404, f"this server hosts no tenant {tenant!r}")
        return tenant

    @api.get("/api/domain", response_model=DomainInfo, tags=["domain"], responses={404: {"description": "no such tenant"}})
    async def get_domain(caller: Caller = Depends(requires("domain:manage"))) -> DomainInfo:
        """The tenant's domain as served: languages, intents and knowledge-base articles."""
        tenant = domain_tenant(caller)
        domain = runtime.engines[tenant].domain
        articles = [KnowledgeArticle(id=a.id, language=a.language, title=a.title) for items in domain.articles.values() for a in items]
        return DomainInfo(tenant=tenant, name=domain.name, languages=domain.languages, intents=sorted(domain.spec.intents), knowledge=articles)

    @api.post("/api/domain/reload", response_model=DomainInfo, tags=["domain"],
              responses={404: {"description": "no such tenant"},
                         422: {"description": "the domain folder has problems; the served domain is unchanged"}})
    async def reload_domain(caller: Caller = Depends(requires("domain:manage"))) -> DomainInfo:
        """Load the tenant's domain folder again (after an edit): new sessions get it, live ones
        finish on the old one. A domain with problems is refused and the old one stays."""
        tenant = domain_tenant(caller)
        try:
            await runtime.reload_domain(tenant)
        except DomainProblems as exc:
            raise HTTPException(422, str(exc)) from None
        return await get_domain(caller)

    return api
