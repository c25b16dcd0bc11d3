"""Personal data kept out of log files: a filter that redacts every record before it is written.

Log lines are shipped, kept and read far more widely than the conversation store, and a debug
line or an exception message can carry what a customer typed. The filter formats the record's
message, each argument (keeping numbers as numbers and the arguments' shape, which formatters
such as uvicorn's rely on) and a formatted traceback. It is installed on *handlers* (a filter on a logger would miss records
of its child loggers), on every handler present when the bot starts: the root's, and uvicorn's,
which uvicorn configures before the application starts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from voicebot.privacy.masking import redact_turn


class RedactingFilter(logging.Filter):
    def __init__(self, patterns: Mapping[str, re.Pattern[str]] | None = None) -> None:
        super().__init__("voicebot.privacy")
        self.patterns = dict(patterns or {})

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_voicebot_redacted", False):
            return True  # already done by another handler's filter
        try:
            record.getMessage()
        except Exception:  # a broken format string: let the handler report it as it would
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if isinstance(record.msg, str):
            record.msg = self._mask(record.msg)
        # Arguments are masked one by one and keep their shape: formatters such as uvicorn's
        # access log unpack them (numbers stay numbers, so "%d" still formats).
        if isinstance(record.args, tuple):
            record.args = tuple(self._mask_value(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: self._mask_value(value) for key, value in record.args.items()}
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        record._voicebot_redacted = True
        return True

    def _mask(self, text: str) -> str:
        masked, _, _ = redact_turn([text], None, self.patterns)
        return masked[0]

    def _mask_value(self, value: object) -> object:
        if value is None or isinstance(value, bool | int | float):
            return value
        return self._mask(value if isinstance(value, str) else str(value))


class LogRedaction:
    """Install a ``RedactingFilter`` on the handlers present now; ``remove()`` takes it off again
    (a runtime that is closed must not leave filters behind in the process)."""

    def __init__(self, patterns: Mapping[str, re.Pattern[str]] | None = None) -> None:
        self.filter = RedactingFilter(patterns)
        self._handlers: list[logging.Handler] = []

    def install(self) -> LogRedaction:
        loggers = [logging.getLogger(), *(item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger))]
        for logger in loggers:
            for handler in logger.handlers:
                if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                    handler.addFilter(self.filter)
                    self._handlers.append(handler)
        return self

    def remove(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self.filter)
        self._handlers.clear()
