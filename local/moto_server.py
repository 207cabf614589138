"""moto's server, as `python -m moto.server` runs it, with five changes at its edge.

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
- Query reads only the items it can return (`cheap_queries`). moto answers every Query by sorting
  every item of the table (all campaigns, all shards) by key, comparing each with the partition
  asked for, then walking the partition from its first item to the page's start: a 1 000-item
  page of a 10 000-recipient shard, with as many items again in other shards, cost the server
  160 ms of CPU (median; 38 ms now), a recovery tick's index Query 69 ms (11 now; `python -m
  bench.store_query`). DynamoDB's cost of a page is the items it returns, and the throughput
  benchmark charges the store's time on reads to the campaign. The stock query still does all
  the work on what it is given (conditions, limits, the page's last key, filters, projections);
  it is given the partition's items from the page's start, and for an index the table's items
  without the sort its own sort redoes. Same answers (tests/test_storage.py compares them with
  moto's stock server, paging both ways).
- No pauses for full garbage collections (`freeze_survivors`). The table's items are Python
  objects that live as long as the server, and each full collection walked all of them with
  every call waiting: 140-260 ms, longer as a run's table grew (55 000 tracked objects at its
  start, 760 000 after 3 000 recipients), every 20-40 s. A shard sending at its cap lost a
  fifth of a second of sends to each (three dips a 75-s run at 40 mps, each at one of these
  collections). DynamoDB has no such pause. The survivors of each full collection are frozen,
  so the next walks only what came since; a reset of the server (`POST /moto-api/reset`, which
  every benchmark round and every test of the stack starts with) unfreezes and collects them
  all, so what died frozen is not kept past it.

Everything else is moto's own application, request handling and threaded werkzeug server.

    python -m local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import argparse
import base64
import bisect
import gc
import json
import os
import threading
import time
from collections import Counter

LISTEN_QUEUE = 4096
COUNTS_PATH = "/_local/operations"
RESET_PATH = "/moto-api/reset"


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
    """Answers GET /_local/operations with the usage so far; every other request is moto's. After a
    reset, everything frozen is collected again (`freeze_survivors`)."""

    def __init__(self, app, usage: Usage):
        self.app = app
        self.usage = usage

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == RESET_PATH:
            answer = self.app(environ, start_response)
            gc.unfreeze()
            gc.collect()
            return answer
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


_query_items = threading.local()  # what `all_items` gives the stock query running on this thread


def cheap_queries(table_class):
    """Patches moto's Table so that a Query looks only at the items it can return."""
    stock_query, stock_all_items = table_class.query, table_class.all_items

    def all_items(self):
        items = getattr(_query_items, "items", None)
        return stock_all_items(self) if items is None else items

    def query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
              *rest, **kwargs):
        index_name = rest[1] if len(rest) > 1 else kwargs.get("index_name")
        query_filter = set(kwargs) - {"index_name", "hash_key_conditions", "range_key_conditions"}
        items = None  # None: the stock walk of the whole table (other tables, the legacy QueryFilter)
        if not query_filter and index_name is not None:  # the stock query sorts its matches by every key
            items = [item for partition in self.items.values()
                     for item in (partition.values() if self.range_key_attr else [partition])]
        elif not query_filter and _pages_by_string_key(self, hash_key, exclusive_start_key):
            items = _from_page_start(self, hash_key, exclusive_start_key, scan_index_forward)
            items = _through_first_unused(items, range_comparison, range_objs, limit, scan_index_forward)
            exclusive_start_key = None  # its items are already left out
        _query_items.items = items
        try:
            return stock_query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                               scan_index_forward, *rest, **kwargs)
        finally:
            _query_items.items = None

    table_class.query, table_class.all_items = query, all_items


def _typed(value):
    from moto.dynamodb.models.dynamo_type import DynamoType

    return value if value is None or isinstance(value, DynamoType) else DynamoType(value)


def _pages_by_string_key(table, hash_key, exclusive_start_key) -> bool:
    """A Query of one partition of a table with a string sort key (ours), starting in that partition:
    the cases `_from_page_start` handles; any other goes to moto as it is."""
    if hash_key is None or table.range_key_type != "S":
        return False
    if not exclusive_start_key:
        return True
    start_hash, start = (_typed(exclusive_start_key.get(name)) for name in (table.hash_key_attr, table.range_key_attr))
    return start_hash is not None and start_hash == hash_key and start is not None and start.type == "S"


def _from_page_start(table, hash_key, exclusive_start_key, forward: bool) -> list:
    """The partition's items in key order, without those up to the page's start key (those after
    it when reading backwards), as the stock query skips them. Strings order as moto compares them."""
    items = sorted(table.items.get(hash_key, {}).values(), key=lambda item: item.range_key.value)
    if not exclusive_start_key:
        return items
    keys = [item.range_key.value for item in items]
    start = _typed(exclusive_start_key[table.range_key_attr]).value
    return items[bisect.bisect_right(keys, start):] if forward else items[:bisect.bisect_left(keys, start)]


def _through_first_unused(items: list, range_comparison, range_objs, limit, forward: bool) -> list:
    """`items` (in key order) cut after the first one a page of `limit` does not use: the stock query
    stops at that item, and returns the page's last key because there is one."""
    if not limit:
        return items
    ordered = items if forward else items[::-1]
    used = 0
    for position, item in enumerate(ordered):
        if used == limit:
            kept = ordered[: position + 1]
            return kept if forward else kept[::-1]
        used += not range_comparison or item.range_key.compare(range_comparison, range_objs)
    return items


def freeze_survivors():
    """Freezes the survivors of each full collection (`gc.freeze`), so that the next one walks
    only the objects made since; returns the callback, for a test to take out again."""

    def after_full_collection(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()

    gc.callbacks.append(after_full_collection)
    return after_full_collection


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Imported here, not at the top: local/storage.py reads COUNTS_PATH without loading moto.
    from moto.dynamodb.models.table import Table
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
    cheap_queries(Table)
    freeze_survivors()
    app = DomainDispatcherApplication(create_backend_app)
    usage = Usage()
    run_simple(args.host, args.port, UsageApp(app, usage), threaded=True,
               request_handler=metered(MotoRequestHandler, usage))


if __name__ == "__main__":
    main()
