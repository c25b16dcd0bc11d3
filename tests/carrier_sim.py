"""The carrier side of phone-call tests: the simulated caller (``PhoneCaller``, in
``voicebot.channels.twilio.caller``, which benchmarks use too) and ``FakeCarrierApi``, the
carrier's REST API as a real HTTP server on 127.0.0.1 that records what the bot asks of a call
(hang up, transfer) and answers 200 as Twilio does."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from voicebot.channels.twilio.caller import SILENCE_DBFS, PhoneCaller, dbfs

__all__ = ["SILENCE_DBFS", "CarrierRequest", "FakeCarrierApi", "PhoneCaller", "dbfs"]


@dataclass
class CarrierRequest:
    path: str
    form: dict[str, str]
    auth: str | None


class FakeCarrierApi:
    """The carrier's REST API on a free 127.0.0.1 port: records each request, answers 200."""

    def __init__(self) -> None:
        self.requests: list[CarrierRequest] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                form = {key: values[0] for key, values in parse_qs(body).items()}
                recorded.append(CarrierRequest(self.path, form, self.headers.get("authorization")))
                payload = json.dumps({"sid": self.path.rsplit("/", 1)[-1].removesuffix(".json"), "status": form.get("Status", "in-progress")})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def for_call(self, call_sid: str) -> list[CarrierRequest]:
        return [r for r in self.requests if r.path.endswith(f"/Calls/{call_sid}.json")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
