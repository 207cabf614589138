"""The local DynamoDB: moto's server as local/moto_server.py runs it."""

from __future__ import annotations

import gc
import time
import weakref

from campaigns import ledger
from campaigns.models import Recipient, recipient_sk


def test_the_server_counts_the_calls_it_answers_and_their_cpu_time_by_operation(moto_server, table):
    before = moto_server.usage()
    rec = Recipient("CAMPAIGN#c#SHARD#0", recipient_sk(1), phone="919800000001", import_id="i")
    rec.save()
    assert ledger.claim(rec, "batch", time.time())
    assert not ledger.claim(rec, "other", time.time())  # refused calls are answered, and counted, too
    Recipient.get(rec.PK, rec.SK)
    used = moto_server.usage() - before
    assert used.calls == {"PutItem": 1, "UpdateItem": 2, "GetItem": 1}
    assert set(used.cpu_seconds) == set(used.calls)  # each answer took some of the server's CPU
    assert used.process_cpu_seconds >= sum(used.cpu_seconds.values())



def test_the_survivors_of_a_full_collection_are_frozen_until_the_next_reset():
    """The store's objects live as long as it does; after a full collection they are frozen, so
    that the next walks only what came since, and a reset of the server collects what died
    frozen."""
    from local.moto_server import RESET_PATH, Usage, UsageApp, freeze_survivors

    class Node:
        pass

    callback = freeze_survivors()
    try:
        cycle = Node()
        cycle.me = cycle  # only the cyclic collector can free it
        alive = weakref.ref(cycle)
        frozen = gc.get_freeze_count()
        gc.collect(1)
        assert gc.get_freeze_count() == frozen  # young collections freeze nothing
        gc.collect()
        assert gc.get_freeze_count() > frozen  # the cycle survived, among others: frozen
        del cycle
        gc.collect()
        assert alive() is not None  # garbage now, but frozen: not walked
        app = UsageApp(lambda environ, start_response: [b"reset"], Usage())
        assert app({"PATH_INFO": RESET_PATH}, None) == [b"reset"]
        assert alive() is None
    finally:
        gc.callbacks.remove(callback)
        gc.unfreeze()


# One item per DynamoDB type a Query can return, nested ones included.
ITEMS = [
    {"PK": {"S": "P#1"}, "SK": {"S": f"R#{n:03d}"}, "n": {"N": str(n)}, "f": {"N": "1.5"},
     "s": {"S": "naïve ✓"}, "b": {"B": bytes([n, 0, 255])}, "ok": {"BOOL": n % 2 == 0}, "none": {"NULL": True},
     "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]}, "bs": {"BS": [b"x", b"y"]},
     "l": {"L": [{"S": "x"}, {"N": "2"}, {"M": {"k": {"L": [{"B": b"z"}]}}}]},
     "m": {"M": {"a": {"N": "1"}, "b": {"SS": ["c"]}}},
     "due_kind": {"S": "shard"}, "due_at": {"N": str(100 + n)}}
    for n in range(5)
] + [{"PK": {"S": "P#2"}, "SK": {"S": "R#000"}, "s": {"S": "other partition"}}] + [
    # Partitions on both sides of P#1, keys interleaved with its own: a Query must read its partition only.
    {"PK": {"S": pk}, "SK": {"S": f"R#{n:03d}{suffix}"}, "s": {"S": pk}}
    for pk, suffix in (("P#0", ""), ("P#3", "x")) for n in range(7)
] + [{"PK": {"S": "P#1"}, "SK": {"S": f"Q#{n}"}} for n in range(3)]  # outside the R# range

QUERIES = [
    {"KeyConditionExpression": "PK = :p", "ExpressionAttributeValues": {":p": {"S": "P#1"}}},
    {"KeyConditionExpression": "PK = :p AND SK BETWEEN :a AND :b", "Limit": 2, "ConsistentRead": True,
     "ExpressionAttributeValues": {":p": {"S": "P#1"}, ":a": {"S": "R#001"}, ":b": {"S": "R#999"}}},
    {"KeyConditionExpression": "PK = :p", "ProjectionExpression": "SK, l[2], m.b", "ScanIndexForward": False,
     "ExpressionAttributeValues": {":p": {"S": "P#1"}},
     "ReturnConsumedCapacity": "TOTAL"},
    {"KeyConditionExpression": "PK = :p", "Select": "COUNT", "FilterExpression": "ok = :t",
     "ExpressionAttributeValues": {":p": {"S": "P#1"}, ":t": {"BOOL": True}}},
    {"IndexName": "DueIndex", "KeyConditionExpression": "due_kind = :k AND due_at < :t", "Limit": 3,
     "ExpressionAttributeValues": {":k": {"S": "shard"}, ":t": {"N": "103"}}},
    # Paging through a partition, both ways, with key conditions that leave items out on either side.
    *({"KeyConditionExpression": condition, "Limit": limit, "ScanIndexForward": forward,
       "ExpressionAttributeValues": {":p": {"S": "P#1"}, **values}}
      for condition, values in (("PK = :p", {}),
                                ("PK = :p AND begins_with(SK, :r)", {":r": {"S": "R#"}}),
                                ("PK = :p AND SK > :a", {":a": {"S": "Q#1"}}),
                                ("PK = :p AND SK BETWEEN :a AND :b", {":a": {"S": "Q#2"}, ":b": {"S": "R#002"}}))
      for limit in (1, 2, 3, 8) for forward in (True, False)),
    {"KeyConditionExpression": "PK = :p", "Limit": 2, "FilterExpression": "ok = :t",
     "ExpressionAttributeValues": {":p": {"S": "P#1"}, ":t": {"BOOL": True}}},
    {"KeyConditionExpression": "PK = :p AND SK < :a", "Limit": 2, "ScanIndexForward": False,
     "ProjectionExpression": "SK, n", "ExpressionAttributeValues": {":p": {"S": "P#0"}, ":a": {"S": "R#005"}}},
    {"KeyConditionExpression": "PK = :p", "ExpressionAttributeValues": {":p": {"S": "P#9"}}},  # no such partition
]


def _pages(client, query: dict) -> list[dict]:
    """Every page of a query, without the metadata that differs per call (request ids); at most
    as many as the table has items, and one more: a page that repeats its start never ends."""
    pages, start = [], None
    for _ in range(len(ITEMS) + 1):
        page = client.query(TableName="t", **query, **({"ExclusiveStartKey": start} if start else {}))
        page.pop("ResponseMetadata")
        pages.append(page)
        start = page.get("LastEvaluatedKey")
        if not start:
            return pages
    return pages


def test_query_answers_are_the_same_as_moto_s_own_server(moto_server):
    """local/moto_server.py writes Query results itself (json.dumps): they must be moto's, byte for byte in meaning."""
    import subprocess
    import sys

    import boto3
    import pytest

    from local.storage import free_port
    from local.template import load_template, table_definition

    port = free_port()
    stock = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        clients = []
        for url in (moto_server.url, f"http://127.0.0.1:{port}"):
            client = boto3.client("dynamodb", endpoint_url=url)
            _wait_for(client)
            clients.append(client)
        moto_server.reset()
        for client in clients:
            client.create_table(**table_definition(load_template(), "t"))
            for item in ITEMS:
                client.put_item(TableName="t", Item=item)
        lean, stock_client = clients
        for query in QUERIES:
            assert _pages(lean, query) == _pages(stock_client, query), query
        with pytest.raises(lean.exceptions.ResourceNotFoundException):  # errors are still moto's
            lean.query(TableName="missing", KeyConditionExpression="PK = :p",
                       ExpressionAttributeValues={":p": {"S": "P#1"}})
    finally:
        stock.kill()
        stock.wait()


def _wait_for(client, timeout: float = 30.0) -> None:
    from botocore.exceptions import EndpointConnectionError

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_tables()
            return
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the server process is still binding its port: nothing to wait on
