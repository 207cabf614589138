"""Counting DynamoDB work of the code under measurement, in this process.

moto reports a constant ConsumedCapacity, so capacity units are computed here from the
calls pynamodb makes and the items they read and put, by DynamoDB's published sizing rules:
a write costs ceil(item KB) WCU (each GSI whose keys the write sets costs as much again; an
update's item size is not in its request: one unit, see write_units),
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


def _put_units(item: dict) -> float:
    return float(max(1, math.ceil(item_size(item) / 1024)))


def write_units(kwargs: dict) -> float:
    """WCU of one write: 1 per KB of the item, and as much again for each global secondary index
    whose key the write sets or removes. A put's item is in the request and is sized; an update's
    is not (DynamoDB charges the larger of the item before and after it): counted as one unit, which
    holds for the items this code updates per message (recipients without long variables, shards,
    numbers: a few hundred bytes). A transaction costs twice its items."""
    if "TransactItems" in kwargs:
        return 2.0 * len(kwargs["TransactItems"])
    if "RequestItems" in kwargs:  # BatchWriteItem: each put sized, each delete one unit
        requests = [r for rs in kwargs["RequestItems"].values() for r in rs]
        return sum(_put_units(r["PutRequest"]["Item"]) if "PutRequest" in r else 1.0 for r in requests)
    names = set((kwargs.get("ExpressionAttributeNames") or {}).values()) | set(kwargs.get("Item") or ())
    base = _put_units(kwargs["Item"]) if "Item" in kwargs else 1.0
    return base * (1 + sum(1 for keys in INDEX_KEYS if names & keys))


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
