"""The chat path's JSON text (voicebot.core.jsontext, orjson) reads back as what the standard
library wrote before: the same frames for clients, the same stored traces."""

from __future__ import annotations

import dataclasses
import datetime
import json
from decimal import Decimal

import numpy as np
import pytest

from voicebot.core import jsontext


@dataclasses.dataclass
class Slot:
    value: str


TRACE_LIKE = {
    "intent": {"name": "order_status", "confidence": np.float64(0.9731), "top3": [("order_status", 0.97), ("cancel", 0.02)]},
    "language": {"scores": {"en": 0.98, "de": np.float32(0.01)}, "turn": np.int64(3)},
    "slot": Slot("12345"), "at": datetime.datetime(2026, 12, 2, 2, 10, tzinfo=datetime.UTC), "price": Decimal("9.90"),
    7: "int key", None: "none key", True: "bool key", 2.5: "float key", "text": "我的订单 é 🙂", "empty": [], "nested": [[{"a": None}]],
}


def test_reads_back_as_the_standard_library_wrote() -> None:
    assert json.loads(jsontext.dumps(TRACE_LIKE, default=str)) == json.loads(json.dumps(TRACE_LIKE, ensure_ascii=False, default=str))
    assert jsontext.copy_json(TRACE_LIKE, default=str) == json.loads(json.dumps(TRACE_LIKE, ensure_ascii=False, default=str))
    assert "我的订单" in jsontext.dumps(TRACE_LIKE, default=str)  # characters as they are, not \\u escapes


def test_what_orjson_refuses_falls_back_to_the_standard_library() -> None:
    huge = {"big": 2**70, "text": "é"}  # beyond 64 bits
    assert json.loads(jsontext.dumps(huge)) == huge
    assert jsontext.copy_json(huge) == huge


def test_a_value_json_cannot_hold_is_refused_without_default() -> None:
    with pytest.raises(TypeError):
        jsontext.dumps({"x": object()})
    with pytest.raises(TypeError):
        json.dumps({"x": object()})
