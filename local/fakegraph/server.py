"""The fake's HTTP side: the Graph send route and its /_fake/ control endpoints, on the local stack's
loopback server."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from ..loopback import KeepAliveHandler, LoopbackServer
from .wire import graph_error

if TYPE_CHECKING:
    from .core import FakeGraph

MAX_BODY_BYTES = 1_000_000

# The Cloud API's /messages and the Marketing Messages API's /marketing_messages: the same body,
# answers, errors and webhooks; each send's record names the endpoint it came to.
_MESSAGES_PATH = re.compile(r"^/(v\d+(?:\.\d+)?)/([^/]+)/(messages|marketing_messages)/?$")


class FakeGraphServer(LoopbackServer):
    """The loopback server, holding the fake its handlers answer for."""

    def __init__(self, address, handler, fake: FakeGraph):
        self.fake = fake
        super().__init__(address, handler)


class FakeGraphHandler(KeepAliveHandler):
    """Serves one connection's requests; every decision is the fake's (`self.server.fake`)."""

    server: FakeGraphServer

    def do_POST(self) -> None:
        path, query = self._path_and_query()
        if match := _MESSAGES_PATH.match(path):
            self._serve_send(phone_number_id=match.group(2), endpoint=match.group(3))
        elif path == "/_fake/config":
            self._serve_configure()
        elif path == "/_fake/reset":
            self._read_body()
            self.server.fake.reset()
            self._send_json(200, {"ok": True})
        else:
            self._not_found()

    def do_GET(self) -> None:
        path, query = self._path_and_query()
        fake = self.server.fake
        if path == "/_fake/sends":
            since = query.get("since", ["0"])[0]
            if not since.isdigit():
                self._send_json(400, graph_error(100, "since must be a sequence number"))
                return
            self._send_json(200, fake.sends(since=int(since)))
        elif path == "/_fake/rejected":
            self._send_json(200, fake.rejected())
        elif path == "/_fake/stats":
            self._send_json(200, fake.stats())
        elif path == "/_fake/config":
            self._send_json(200, fake.config())
        else:
            self._not_found()

    def _serve_send(self, phone_number_id: str, endpoint: str = "messages") -> None:
        fake = self.server.fake
        fake.request_started()
        answering = False
        try:
            arrived = time.monotonic()
            draw = fake.latency_draw()
            body = self._read_body()
            reply = fake.handle_send(phone_number_id, self.headers.get("Authorization"), body, endpoint)
            if not fake.wait_latency(arrived, draw):
                self.close_connection = True  # stopped: like a dead server, never answer
                return
            extra = (
                {"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'}
                if reply.status == 401
                else {}
            )
            # No longer in flight before its answer goes out: a client that has the answer must
            # never find it still counted (it was, for the moment between the write and this).
            answering = True
            fake.request_finished()
            self._send_json(reply.status, reply.body, extra)
        finally:
            if not answering:
                fake.request_finished()

    def _serve_configure(self) -> None:
        try:
            changes = json.loads(self._read_body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings")
            self._send_json(200, self.server.fake.configure(**changes))
        except ValueError as error:
            self._send_json(400, graph_error(100, str(error)))

    def _path_and_query(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            # Without a trustworthy length the rest of the stream cannot be framed: answer, then hang up.
            self.close_connection = True
            return b""
        return self.rfile.read(length)

    def _not_found(self) -> None:
        if self.command == "POST":
            self._read_body()  # so the connection stays usable for the next request
        self._send_json(404, graph_error(100, f"Unsupported request: {self.command} {self.path}"))

    def _send_json(self, status: int, payload, extra_headers: dict | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
