"""``/api/agents``: the human agents' protocol (docs/agents.md) and the ``/console`` page.

Agents sign in with an API key of scope ``agents:act`` or an agent token (``POST
/api/agents/tokens``, issued to a key of scope ``agents:issue``). REST does the actions (take,
reply, hand back, close) and reads the customer view; the live channel (websocket
``/api/agents/live``) pushes the queue and the customers' messages, and counts the agent online.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocket, WebSocketDisconnect

from voicebot.access.agent_tokens import AGENT_SCOPE, looks_like_jwt
from voicebot.access.apikeys import ALL_TENANTS, Forbidden, require_scope
from voicebot.access.http import api_key_header, authenticate, bearer, presented_key
from voicebot.access.tokens import AccessDenied
from voicebot.agents.desk import DeskError
from voicebot.api.common import BAD_BODY
from voicebot.core.runtime import BotRuntime
from voicebot.privacy.masking import redact_turn
from voicebot.resources import web_dir

AUTH_TIMEOUT_S = 10.0
EARLIER_CONVERSATIONS = 10


@dataclass(frozen=True)
class Agent:
    name: str
    tenant: str  # "*": every tenant

    @property
    def reach(self) -> str | None:
        return None if self.tenant == ALL_TENANTS else self.tenant


def agent_from_credential(runtime: BotRuntime, credential: str | None) -> Agent:
    """An agent token, or an API key with scope ``agents:act``; AccessDenied / Forbidden otherwise."""
    if credential and looks_like_jwt(credential):
        claims = runtime.access.agent_tokens.verify(credential)
        return Agent(claims.name, claims.tenant)
    principal = runtime.access.keys.authenticate(credential)
    require_scope(principal, AGENT_SCOPE)
    return Agent(principal.name, principal.tenant)


class AgentTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="the agent's name, shown to customers and in the queue")
    tenant: str | None = Field(None, max_length=64, description="the tenant they serve; default: the key's (an operator key: every tenant)")


class AgentToken(BaseModel):
    token: str
    name: str
    tenant: str
    expires_at: float


class AgentReply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)


def router(runtime: BotRuntime) -> APIRouter:
    api = APIRouter()
    desk = runtime.agents

    async def agent(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                    header_key: str | None = Security(api_key_header)) -> Agent:
        try:
            return agent_from_credential(runtime, presented_key(credentials, header_key))
        except AccessDenied as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
        except Forbidden as exc:
            raise HTTPException(403, str(exc)) from None

    def desk_call(exc: DeskError) -> HTTPException:
        return HTTPException(exc.http_status, str(exc))

    @api.get("/console", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(web_dir() / "console.html", media_type="text/html")

    @api.post("/api/agents/tokens", response_model=AgentToken, tags=["agents"],
              responses={403: {"description": "the key lacks agents:issue or does not reach the tenant"}, **BAD_BODY})
    async def issue_agent_token(request: Request, body: AgentTokenRequest, credentials: HTTPAuthorizationCredentials | None = Security(bearer),
                                header_key: str | None = Security(api_key_header)) -> AgentToken:
        """A signed, expiring token an agent signs in to the console with (scope ``agents:act`` only)."""
        principal = authenticate(request, credentials, header_key)
        try:
            require_scope(principal, "agents:issue")
        except Forbidden as exc:
            raise HTTPException(403, str(exc)) from None
        tenant = body.tenant or principal.tenant
        if tenant != ALL_TENANTS and tenant not in runtime.access.tenants:
            raise HTTPException(403, f"this server hosts no tenant {tenant!r}")
        if principal.tenant != ALL_TENANTS and tenant != principal.tenant:
            raise HTTPException(403, f"the API key {principal.name!r} does not reach tenant {tenant!r}")
        token, claims = runtime.access.agent_tokens.issue(body.name, tenant)
        return AgentToken(token=token, name=claims.name, tenant=claims.tenant, expires_at=claims.expires_at)

    @api.get("/api/agents/queue", tags=["agents"])
    async def queue(who: Agent = Depends(agent)) -> dict[str, Any]:
        """Handed-off conversations: live chats (waiting or held), call-back requests, messages left."""
        tenants = runtime.access.tenants if who.reach is None else [who.reach]
        return {"items": await desk.queue(who.reach), "agent": who.name,
                "availability": {tenant: desk.unavailable(tenant) for tenant in tenants}, "opening_hours": desk.hours.describe()}

    @api.get("/api/agents/conversations/{conversation_id}", tags=["agents"], responses={404: {"description": "no such conversation"}})
    async def customer_view(conversation_id: str, who: Agent = Depends(agent)) -> dict[str, Any]:
        """The whole conversation with its traces, and the customer: profile, language, earlier
        conversations with their topics and ratings."""
        found = await runtime.storage.get_conversation(conversation_id, tenant=who.reach)
        if found is None:
            raise HTTPException(404, f"no conversation {conversation_id!r}")
        if runtime.settings.privacy.redact_stored and found["state"] is not None:
            found["state"] = redact_turn([], found["state"], runtime.storage.sealer.patterns.everything)[1]
        entry = desk.entries.get(conversation_id)
        profile, earlier = None, []
        if found["user_id"]:
            profile = await runtime.storage.get_profile(found["user_id"])
            for other in await runtime.storage.list_customer_conversations(found["user_id"], tenant=who.reach, limit=EARLIER_CONVERSATIONS + 1):
                if other["id"] == conversation_id:
                    continue
                stored = await runtime.storage.get_conversation(other["id"], tenant=who.reach)
                turns = stored["turns"] if stored else []
                topics = Counter(t["intent"] for t in turns if t["intent"])
                earlier.append({**other, "topics": [name for name, _ in topics.most_common(5)],
                                "turn_ratings": {"up": sum(t["rating"] == 1 for t in turns), "down": sum(t["rating"] == -1 for t in turns)}})
        return {"conversation": found, "queue": entry.to_dict() if entry else None,
                "customer": {"user_id": found["user_id"], "language": found["language"], "profile": profile,
                             "earlier": earlier[:EARLIER_CONVERSATIONS]}}

    @api.post("/api/agents/conversations/{conversation_id}/take", tags=["agents"],
              responses={404: {"description": "not waiting for an agent"}, 409: {"description": "another agent holds it"}})
    async def take(conversation_id: str, who: Agent = Depends(agent)) -> dict[str, Any]:
        """Hold the conversation: only this agent may reply until it is handed back or closed."""
        try:
            return (await desk.take(conversation_id, who.name, who.reach)).to_dict()
        except DeskError as exc:
            raise desk_call(exc) from None

    @api.post("/api/agents/conversations/{conversation_id}/messages", tags=["agents"],
              responses={404: {"description": "not waiting for an agent"}, 409: {"description": "not held by this agent"}, **BAD_BODY})
    async def reply(conversation_id: str, body: AgentReply, who: Agent = Depends(agent)) -> dict[str, Any]:
        """Send a reply to the customer's chat (stored with the conversation as from an agent)."""
        try:
            return {"turn_index": await desk.say(conversation_id, who.name, body.text, who.reach)}
        except DeskError as exc:
            raise desk_call(exc) from None

    @api.post("/api/agents/conversations/{conversation_id}/handback", tags=["agents"],
              responses={404: {"description": "not waiting for an agent"}, 409: {"description": "not held by this agent"}})
    async def hand_back(conversation_id: str, who: Agent = Depends(agent)) -> dict[str, str]:
        """The bot answers the customer again."""
        try:
            await desk.hand_back(conversation_id, who.name, who.reach)
        except DeskError as exc:
            raise desk_call(exc) from None
        return {"status": "active"}

    @api.post("/api/agents/conversations/{conversation_id}/close", tags=["agents"],
              responses={404: {"description": "not waiting for an agent"}, 409: {"description": "held by another agent"}})
    async def close(conversation_id: str, who: Agent = Depends(agent)) -> dict[str, str]:
        """Done with it: out of the queue (a live chat, a call-back request or a message left)."""
        try:
            await desk.close(conversation_id, who.name, who.reach)
        except DeskError as exc:
            raise desk_call(exc) from None
        return {"status": "closed"}

    @api.websocket("/api/agents/live")
    async def live(websocket: WebSocket) -> None:
        """The console's live channel: first frame ``{"type": "auth", "token": ...}``; then the
        queue and the customers' messages as they happen. The agent is online while it is open."""
        await websocket.accept()
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                first = json.loads(await websocket.receive_text())
            who = agent_from_credential(runtime, first.get("token") if isinstance(first, dict) else None)
        except (TimeoutError, ValueError, AccessDenied, Forbidden, WebSocketDisconnect) as exc:
            message = str(exc) if isinstance(exc, AccessDenied | Forbidden) else "send {\"type\": \"auth\", \"token\": ...} first"
            with contextlib.suppress(Exception):
                await websocket.send_text(json.dumps({"type": "error", "code": "unauthorized", "message": message}))
                await websocket.close(code=1008)
            return
        subscription = desk.subscribe(who.name, who.tenant)
        reader = asyncio.create_task(_read_until_closed(websocket))
        try:
            await websocket.send_text(json.dumps({"type": "hello", "agent": who.name, "tenant": who.tenant}))
            for tenant in (runtime.access.tenants if who.reach is None else [who.reach]):
                await desk.publish_queue(tenant)  # this console gets the queue; the others see nothing new
            while not reader.done() and not subscription.dropped:
                getter = asyncio.create_task(subscription.events.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                await websocket.send_text(json.dumps(getter.result(), ensure_ascii=False, default=str))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            desk.unsubscribe(subscription)
            reader.cancel()
            with contextlib.suppress(Exception):
                await websocket.close()

    return api


async def _read_until_closed(websocket: WebSocket) -> None:
    """The console sends nothing but pings after auth; returns when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
