"""A slot value found in a user message: what the NLU hands the dialogue, carried by events."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Entity:
    slot: str
    kind: str
    value: str
    text: str
    start: int
    end: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
