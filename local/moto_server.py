"""moto's server, as `python -m moto.server` runs it, with two changes at its edge.

- A deep listen queue. werkzeug's server closes the connection after every response, so each
  DynamoDB call opens a new one; with a dozen sender processes connecting at once, the default
  queue of 128 overflowed and the kernel dropped connection attempts, which clients only retry
  a second later: every sender stalled for a second, again and again.
- A count of the calls it answered, by operation, at GET /_local/operations: the benchmarks
  count a run's writes and reads per message on the store's side, where every process's calls
  arrive, instead of estimating them in one process.

Everything else is moto's own application, request handler and threaded werkzeug server.

    python -m local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Imported here, not at the top: local/storage.py reads COUNTS_PATH without loading moto.
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import BaseWSGIServer, run_simple

    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server does: moto builds some URLs from it
    BaseWSGIServer.request_queue_size = LISTEN_QUEUE
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, CountingApp(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
