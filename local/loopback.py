"""The HTTP server the local stack's own servers (the fake Graph API, the gateway) are built on.

Loopback only, threaded, HTTP/1.1 keep-alive (clients pool their connections), and stoppable: the
connections it kept alive are tracked so that stopping it ends their handler threads too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def loopback_only(host: str, what: str) -> str:
    """`host` if it is an IPv4 loopback address (localhost reads as 127.0.0.1); ValueError otherwise:
    nothing of the local stack may be reachable from outside the machine."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{what} binds to an IPv4 loopback address only, not {host!r}")
    return host


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of many client threads connecting at once

    def __init__(self, address, handler):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """Drops kept-alive connections: their handler threads would otherwise go on serving after a stop."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        # Clients that go away mid-response are routine here (crash tests kill them); stay quiet about it.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a requests.Session can pool connections
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't let Nagle hold the body
    server: LoopbackServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def log_message(self, format, *args) -> None:
        pass  # per-request logging would dominate the cost at 1000 requests/s
