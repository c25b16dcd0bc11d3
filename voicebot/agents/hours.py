"""Opening hours of the agents' desk (``agents.opening_hours`` in ``agents.timezone``).

A rule is ``"<days> <HH:MM>-<HH:MM>"`` with days ``mon``..``sun``, a range (``mon-fri``) or a
list (``sat,sun``); an end before the start runs past midnight (``fri 22:00-02:00``). No rules:
always open. Bad rules fail at start, naming the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voicebot.config import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RULE = re.compile(r"^\s*([a-z,\-]+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time

    def contains(self, moment: datetime) -> bool:
        now, day = moment.time(), moment.weekday()
        if self.start <= self.end:
            return day in self.days and self.start <= now < self.end
        # Past midnight: the evening of a listed day, or the early hours of the day after one.
        return (day in self.days and now >= self.start) or ((day - 1) % 7 in self.days and now < self.end)


def _days(spec: str, rule: str) -> frozenset[int]:
    found: set[int] = set()
    for part in spec.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(end not in DAYS for end in ends):
            raise ConfigError(f"agents.opening_hours: {rule!r}: days are {', '.join(DAYS)}, a range (mon-fri) or a list (sat,sun)")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        found.update(range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)])
    return frozenset(found)


def _time(hours: str, minutes: str, rule: str) -> time:
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return time(23, 59, 59, 999999)
    if h > 23 or m > 59:
        raise ConfigError(f"agents.opening_hours: {rule!r}: {hours}:{minutes} is not a time of day")
    return time(h, m)


class OpeningHours:
    def __init__(self, rules: list[str], timezone: str) -> None:
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"agents.timezone: unknown time zone {timezone!r} (an IANA name such as Europe/Berlin)") from None
        self.rules = list(rules)
        self.windows = []
        for rule in rules:
            match = _RULE.match(rule.lower())
            if match is None:
                raise ConfigError(f"agents.opening_hours: {rule!r} is not '<days> HH:MM-HH:MM' (e.g. 'mon-fri 09:00-17:00')")
            days, h1, m1, h2, m2 = match.groups()
            self.windows.append(Window(_days(days, rule), _time(h1, m1, rule), _time(h2, m2, rule)))
        self.timezone = timezone

    def is_open(self, moment: datetime | None = None) -> bool:
        if not self.windows:
            return True
        local = (moment or datetime.now(self.zone)).astimezone(self.zone)
        return any(window.contains(local) for window in self.windows)

    def describe(self) -> str:
        """What a customer is told: the rules as configured, with their time zone."""
        return f"{'; '.join(self.rules)} ({self.timezone})" if self.rules else ""
