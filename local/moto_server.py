"""moto's server, as `python -m moto.server` runs it, with three changes at its edge.

- A deep listen queue. werkzeug's server closes the connection after every response, so each
  DynamoDB call opens a new one; with a dozen sender processes connecting at once, the default
  queue of 128 overflowed and the kernel dropped connection attempts, which clients only retry
  a second later: every sender stalled for a second, again and again.
- A count of the calls it answered, by operation, at GET /_local/operations: the benchmarks
  count a run's writes and reads per message on the store's side, where every process's calls
  arrive, instead of estimating them in one process.
- Query results written as JSON directly. moto serialises every response by walking botocore's
  shape model value by value, about a millisecond per item a Query returns: a sender's page of
  500 recipients held the server for half a second, a stall of every other call that DynamoDB
  does not have. A Query result is already in DynamoDB's wire format (moto turns its items into
  {type: value} maps first), so `json.dumps` writes the same body; tests/test_storage.py checks
  that answers are equal to moto's own.

Everything else is moto's own application, request handler and threaded werkzeug server.

    python -m local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
from collections import Counter

LISTEN_QUEUE = 4096
COUNTS_PATH = "/_local/operations"


class CountingApp:
    """Counts each call by its X-Amz-Target operation (e.g. `UpdateItem`), then lets moto answer it."""

    def __init__(self, app):
        self.app = app
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self._lock:
                body = json.dumps(dict(self.counts)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            with self._lock:
                self.counts[target.rsplit(".", 1)[-1]] += 1
        return self.app(environ, start_response)


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
    run_simple(args.host, args.port, CountingApp(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
