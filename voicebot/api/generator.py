"""``/api/generator``: the response generator in use, and hot-swapping it. Its own module, not
part of domain: one generator serves every tenant, so swapping it is an operator's job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from voicebot.access.http import Caller, requires
from voicebot.api.common import BAD_BODY
from voicebot.core.runtime import BotRuntime


class GeneratorInfo(BaseModel):
    backend: str
    model: str | None
    precision: str | None
    device: str | None


class GeneratorSwap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=4096)


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()
    settings = runtime.settings

    def generator_info() -> GeneratorInfo:
        generator = runtime.generator
        if generator is None:
            return GeneratorInfo(backend="none", model=None, precision=None, device=None)
        return GeneratorInfo(backend="seq2seq", model=generator.model_name, precision=generator.precision, device=generator.device)

    @api.get("/api/generator", response_model=GeneratorInfo, tags=["operations"])
    async def get_generator(caller: Caller = Depends(requires("domain:manage"))) -> GeneratorInfo:
        """The response generator in use."""
        return generator_info()

    @api.put("/api/generator", response_model=GeneratorInfo, tags=["operations"],
             responses={403: {"description": "the generator serves every tenant: an operator key (tenant '*') is needed"},
                        409: {"description": "no seq2seq generator is configured"}, **BAD_BODY})
    async def swap_generator(body: GeneratorSwap, caller: Caller = Depends(requires("domain:manage"))) -> GeneratorInfo:
        """Hot-swap the generator (e.g. to a folder `voicebot train generator` wrote) without
        dropping sessions. The generator is shared by all tenants, so only an operator key may."""
        if caller.principal.tenant != "*":
            raise HTTPException(403, "the generator serves every tenant: swapping it needs an operator key (tenant '*')")
        if settings.generation.backend != "seq2seq":
            raise HTTPException(409, "generation.backend is 'none': configure a seq2seq generator first")
        try:
            await runtime.swap_generator(body.model)
        except (OSError, ValueError) as exc:
            raise HTTPException(422, f"cannot load {body.model!r}: {exc}") from None
        return generator_info()

    return api
