"""The contract every response generator (``[generation] backend``) meets.

The generation stage phrases grounded answers with it (the policy's prompt fields in, text out,
streamed piece by piece so the first sentence can be spoken before the last is written); with
``generation.state_tracking`` the dialogue also asks it for slot values. One generator serves
every session of the process, so it should batch concurrent requests; a failed request raises
``GenerationError`` for that caller only. ``PUT /api/generator`` builds a new one beside the old
(its ``model`` option replaced), then closes the old one after what it has queued.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class GenerationError(Exception):
    """Generation failed for this request (its batch-mates are unaffected)."""


@dataclass
class GenerationResult:
    text: str
    tokens: int
    cancelled: bool
    batch_size: int
    queued_ms: float
    generate_ms: float
    model: str


class Generator(Protocol):
    model_name: str  # shown by GET /api/generator and in traces
    precision: str
    device: str

    async def generate(self, prompt: str, max_new_tokens: int = 64) -> GenerationResult:
        """The whole answer to one prompt."""
        ...

    def start_stream(self, prompt: str, max_new_tokens: int = 64) -> tuple[AsyncIterator[str], asyncio.Future[GenerationResult], threading.Event]:
        """The pieces as they are produced, the final result, and a switch that cancels the
        request (barge-in, a turn timeout)."""
        ...

    def close(self) -> None:
        """Finish what is queued, then release the model."""
        ...
