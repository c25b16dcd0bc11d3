"""Keypad digits (DTMF) on a call: what the caller types becomes a message of the conversation.

Digits collect until ``#`` or a pause, then go to the dialogue as the caller's answer, so they
fill the slot being asked (an order number) as if spoken. ``*`` clears what was typed. ``0``
pressed first asks for a human (the usual convention on phone menus); inside a number it is a
digit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Keypad:
    def __init__(self, on_digits: Callable[[str], Awaitable[None]], on_human: Callable[[], Awaitable[None]],
                 pause_s: float, max_digits: int = 32) -> None:
        self.on_digits = on_digits
        self.on_human = on_human
        self.pause_s = pause_s
        self.max_digits = max_digits
        self.typed = ""
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def press(self, digit: str) -> None:
        self._cancel_timer()
        if digit == "#":
            self._submit()
        elif digit == "*":
            self.typed = ""
        elif digit == "0" and not self.typed:
            self._run(self.on_human())
        elif digit.isdigit() and len(self.typed) < self.max_digits:
            self.typed += digit
            self._timer = asyncio.get_running_loop().call_later(self.pause_s, self._submit)

    def _submit(self) -> None:
        self._cancel_timer()
        digits, self.typed = self.typed, ""
        if digits:
            self._run(self.on_digits(digits))

    def _run(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel_timer()
        for task in list(self._tasks):
            task.cancel()
