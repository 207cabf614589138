"""moto's server, as `python -m moto.server` runs it, with three changes at its edge.

- A deep listen queue. werkzeug's server closes the connection after every response, so each
  DynamoDB call opens a new one; with a dozen sender processes connecting at once, the default
  queue of 128 overflowed and the kernel dropped connection attempts, which clients only retry
  a second later: every sender stalled for a second, again and again.
- A count of the calls it answered, and of the CPU time it spent answering them, by operation,
  at GET /_local/operations: the benchmarks count a run's writes and reads per message on the
  store's side, where every process's calls arrive, instead of estimating them in one process,
  and know what a write of that very run cost the store. moto's request handler is subclassed
  only to time each call's thread (`metered`).
- Query results written as JSON directly. moto serialises every response by walking botocore's
  shape model value by value, about a millisecond per item a Query returns: a sender's page of
  500 recipients held the server for half a second, a stall of every other call that DynamoDB
  does not have. A Query result is already in DynamoDB's wire format (moto turns its items into
  {type: value} maps first), so `json.dumps` writes the same body; tests/test_storage.py checks
  that answers are equal to moto's own.

Everything else is moto's own application, request handling and threaded werkzeug server.

    python -m local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
import time
from collections import Counter

LISTEN_QUEUE = 4096
COUNTS_PATH = "/_local/operations"


class Usage:
    """The calls answered and the CPU seconds spent on them, by X-Amz-Target operation (e.g.
    `UpdateItem`); with the whole process's CPU seconds, which also count what no call is
    charged for (accepting connections, starting their threads), and the time it is read at: a
    reader whose request queued behind a thousand calls still knows when the count was taken."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.cpu_seconds: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, operation: str, cpu_seconds: float) -> None:
        with self._lock:
            self.calls[operation] += 1
            self.cpu_seconds[operation] += cpu_seconds

    def as_json(self) -> bytes:
        with self._lock:
            return json.dumps({"calls": self.calls, "cpu_seconds": self.cpu_seconds,
                               "process_cpu_seconds": time.process_time(), "taken_at": time.time()}).encode()


class UsageApp:
    """Answers GET /_local/operations with the usage so far; every other request is moto's."""

    def __init__(self, app, usage: Usage):
        self.app = app
        self.usage = usage

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != COUNTS_PATH:
            return self.app(environ, start_response)
        body = self.usage.as_json()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def metered(handler_class, usage: Usage):
    """`handler_class` recording each DynamoDB call in `usage` with the CPU time of the thread that
    served it: reading the request, moto's answer, writing it out (werkzeug closes every connection
    after one response, so a connection is a call). Thread CPU time, not wall time: waiting for
    the GIL or the network is not the call's cost."""

    class Metered(handler_class):
        def handle(self):
            started = time.thread_time()
            try:
                super().handle()
            finally:
                headers = getattr(self, "headers", None)  # none if the client left before a request
                target = headers.get("X-Amz-Target", "") if headers else ""
                if target:
                    usage.record(target.rsplit(".", 1)[-1], time.thread_time() - started)

    return Metered


# Operations whose results are written by `lean_json` rather than by moto's serializer.
LEAN_OPERATIONS = frozenset({"Query"})


def _wire(value):
    """What json.dumps cannot write itself: binary values (moto hands them over as raw bytes)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"not a DynamoDB wire value: {type(value).__name__}")


def lean_json(execute_result):
    """Wraps moto's DynamoResult.execute_result: LEAN_OPERATIONS' results go out as plain JSON."""

    def execute(result, context):
        if context.operation_model.name in LEAN_OPERATIONS:
            try:
                body = json.dumps(result.result, default=_wire)
            except TypeError:  # something only moto's serializer knows how to write
                return execute_result(result, context)
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, body
        return execute_result(result, context)

    return execute


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Imported here, not at the top: local/storage.py reads COUNTS_PATH without loading moto.
    from moto.dynamodb.responses import DynamoResult
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import BaseWSGIServer, run_simple

    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server does: moto builds some URLs from it
    BaseWSGIServer.request_queue_size = LISTEN_QUEUE
    DynamoResult.execute_result = lean_json(DynamoResult.execute_result)
    app = DomainDispatcherApplication(create_backend_app)
    usage = Usage()
    run_simple(args.host, args.port, UsageApp(app, usage), threaded=True,
               request_handler=metered(MotoRequestHandler, usage))


if __name__ == "__main__":
    main()
