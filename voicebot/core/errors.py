"""One base for every refusal a client is told about: a protocol code, a message, an HTTP status.

Channels render a ``Refusal`` in their own wire format (an HTTP answer, a websocket error frame,
a spoken apology) from these three fields, so a new channel refuses the same way as the others
without a table of its own.
"""

from __future__ import annotations

from typing import ClassVar


class Refusal(Exception):
    """Something the client asked for is refused; ``code`` is stable, ``message`` is for people."""

    code: ClassVar[str] = "refused"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may narrow the class's code
        if http_status is not None:
            self.http_status = http_status  # type: ignore[misc]
        self.retry_after = retry_after

    def payload(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class Unauthorized(Refusal):
    code = "unauthorized"
    http_status = 401


class ForbiddenOrigin(Unauthorized):
    http_status = 403


class Busy(Refusal):
    """A capacity limit: trying again later may work."""

    code = "busy"
    http_status = 503


class ShuttingDown(Busy):
    """The server is stopping (SIGTERM): new sessions are refused while live ones finish."""

    code = "server_restarting"


class ResumeError(Refusal):
    """The resume token is unknown (or its conversation is gone, or belongs to another tenant)."""

    code = "resume_failed"
    http_status = 404


class UnknownTenant(Refusal):
    """A session was asked for a tenant this server does not host."""

    code = "unknown_tenant"
    http_status = 404
