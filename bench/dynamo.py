"""Counting DynamoDB work of the code under measurement, in this process.

moto reports a constant ConsumedCapacity, so capacity units are computed here from the
calls pynamodb makes and the items they read, by DynamoDB's published sizing rules:
a write costs ceil(item KB) WCU (each GSI whose keys the write sets costs as much again),
a read costs ceil(bytes read / 4 KB) RCU, halved when eventually consistent.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections import Counter
from contextlib import contextmanager

from pynamodb.connection.base import Connection

from local.storage import DynaliteServer, MotoServer
from local.template import load_template, table_definition

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
READS = {"GetItem", "Query", "Scan", "BatchGetItem"}


def attribute_size(value: dict) -> int:
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return math.ceil(len(inner.lstrip("-").replace(".", "")) / 2) + 1
    if kind == "BOOL" or kind == "NULL":
        return 1
    if kind in ("SS", "NS"):
        return sum(len(v.encode()) for v in inner)
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in inner.items())
    return len(str(inner))


def item_size(item: dict) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def _index_keys() -> list[set[str]]:
    """The key attributes of each global secondary index, from the table in template.yaml."""
    table = table_definition(load_template(), "any")
    return [{key["AttributeName"] for key in index["KeySchema"]} for index in table.get("GlobalSecondaryIndexes", [])]


INDEX_KEYS = _index_keys()


def write_units(kwargs: dict) -> float:
    """WCU of one write: 1 per KB of the item (the per-message items are far under 1 KB), and as
    much again for each global secondary index whose key the write sets or removes."""
    if "RequestItems" in kwargs or "TransactItems" in kwargs:  # batch and transaction: 1 per item
        items = kwargs.get("TransactItems") or [r for rs in kwargs.get("RequestItems", {}).values() for r in rs]
        return float(len(items)) * (2 if "TransactItems" in kwargs else 1)
    names = set((kwargs.get("ExpressionAttributeNames") or {}).values()) | set(kwargs.get("Item") or ())
    return 1.0 + sum(1.0 for keys in INDEX_KEYS if names & keys)


class Meter:
    def __init__(self):
        self.calls: Counter = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self.items_read = 0
        self._lock = threading.Lock()

    @property
    def writes(self) -> int:
        return sum(n for op, n in self.calls.items() if op in WRITES)

    def record(self, operation: str, kwargs: dict, result: dict) -> None:
        with self._lock:
            self.calls[operation] += 1
            if operation in WRITES:
                self.write_units += write_units(kwargs)
            if operation in ("Query", "Scan"):
                items = result.get("Items", [])
                self.items_read += len(items)
                units = max(1, math.ceil(sum(item_size(i) for i in items) / 4096))
                self.read_units += units * (1.0 if kwargs.get("ConsistentRead") else 0.5)
            elif operation == "GetItem":
                self.items_read += 1 if result.get("Item") else 0
                units = max(1, math.ceil(item_size(result.get("Item", {})) / 4096))
                self.read_units += units * (1.0 if kwargs.get("ConsistentRead") else 0.5)


@contextmanager
def metered():
    """Count every DynamoDB call pynamodb makes in this process while the block runs."""
    meter = Meter()
    original = Connection.dispatch

    def dispatch(self, operation_name, operation_kwargs):
        try:
            result = original(self, operation_name, operation_kwargs)
        except Exception:
            # A write refused by its condition is charged as if it had been made.
            meter.record(operation_name, operation_kwargs, {})
            raise
        meter.record(operation_name, operation_kwargs, result or {})
        return result

    Connection.dispatch = dispatch
    try:
        yield meter
    finally:
        Connection.dispatch = original


def local_store(name: str, moto: MotoServer) -> contextlib.AbstractContextManager:
    """The DynamoDB a benchmark runs on: dynalite in memory (as `make up` runs it), or the moto
    server already serving secrets."""
    if name == "moto":
        return contextlib.nullcontext(moto)
    reason = DynaliteServer.missing()
    if reason:
        raise SystemExit(f"{reason} (or pass --store moto)")
    return DynaliteServer()
