"""An integrator's own channel, outside the core: plain HTTP request/response chat.

Loaded by config alone (``server.channels = ["rest_channel:RestChatChannel"]``, options in
``[channels.rest]``) to prove a new adapter needs no core edit. It follows the rules every
channel follows through the base class: admission by session token, session limits and the
message rate, refusals rendered from their code and status.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from voicebot.channels.base import Channel
from voicebot.core.errors import Refusal
from voicebot.core.events import BotMessage, ErrorEvent


class RestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field("/rest/chat", description="where the channel answers POSTs")
    reply_timeout_s: float = Field(30.0, gt=0, description="how long a request waits for the bot's answer")


class RestChatChannel(Channel):
    name = "rest"
    Options = RestOptions
    options: RestOptions

    def routes(self) -> list[BaseRoute]:
        return [Route(self.options.path, self.chat, methods=["POST"])]

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None
        client = request.client.host if request.client else None
        try:
            claims = self.admit(bearer, request.headers.get("origin"))
            handle = await self.open_session(claims, client=client, resume_token=body.get("token"), language=body.get("language"))
        except Refusal as refusal:
            return self.refusal_response(refusal)
        try:
            await handle.send_text(str(body["text"]))
            async with asyncio.timeout(self.options.reply_timeout_s):
                async for event in handle.events():
                    if isinstance(event, BotMessage):
                        return JSONResponse({"text": event.text, "language": event.language, "token": handle.token})
                    if isinstance(event, ErrorEvent):
                        return JSONResponse({"error": event.code, "message": event.message}, status_code=500)
        except Refusal as refusal:
            return self.refusal_response(refusal)
        except TimeoutError:
            return JSONResponse({"error": "timeout", "message": "no answer in time"}, status_code=504)
        finally:
            await handle.close()
        return JSONResponse({"error": "no_answer", "message": "the session ended without an answer"}, status_code=500)
