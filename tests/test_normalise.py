"""How Whisper writes a number read aloud, and what the order-id slot needs."""

from __future__ import annotations

import pytest

from voicebot.pipelines.asr.normalise import normalise_spoken_digits


@pytest.mark.parametrize(
    ("heard", "meant"),
    [
        ("The number is 1 2 3 4 5.", "The number is 12345."),
        ("Where's my order? The numbers 1, 2, 3, 4, 5.", "Where's my order? The numbers 12345."),
        ("It is 1,2,3,4,5", "It is 12345"),
        ("order 5-4-3-2-1 please", "order 54321 please"),
        ("my order is 12,345", "my order is 12345"),
        ("my order is 12 345", "my order is 12345"),
    ],
)
def test_numbers_read_aloud_become_one_number(heard: str, meant: str) -> None:
    assert normalise_spoken_digits(heard) == meant


@pytest.mark.parametrize(
    "text",
    ["I bought 2, 3 or 4 phones", "it costs 1,5 euros", "version 1.2.3", "call me at 3 pm", "pi is 3.14159"],
)
def test_ordinary_numbers_are_left_alone(text: str) -> None:
    assert normalise_spoken_digits(text) == text
