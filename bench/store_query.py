"""What a Query costs the local store: moto's stock Table.query against local/moto_server.py's.

In-process, on moto's backend (the table from template.yaml): one shard of `--recipients` items, as
many again in two other shards, and the shards' DueIndex entries. Reads the shard through in pages
of the sender's size, and queries the DueIndex as a recovery tick does; CPU time per call, stock
then patched (`cheap_queries`), and the patched answers checked equal to the stock ones.
    .venv/bin/python -m bench.store_query [--recipients 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import boto3
from moto import mock_aws
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table

from campaigns.ledger import LAST_SEQ, SCAN_PAGE
from campaigns.models import recipient_sk, shard_pk
from local.moto_server import cheap_queries
from local.template import load_template, table_definition

TABLE = "bench"
SHARD = {"S": shard_pk("c", 0)}


def fill(backend, recipients: int) -> None:
    for shard, count in ((0, recipients), (1, recipients // 2), (2, recipients // 2)):
        pk = {"S": shard_pk("c", shard)}
        for seq in range(count):
            backend.put_item(TABLE, {"PK": pk, "SK": {"S": recipient_sk(seq)}, "status": {"S": "pending"},
                                     "phone": {"S": "919800000001"}, "import_id": {"S": "i"}})
        backend.put_item(TABLE, {"PK": pk, "SK": {"S": "SHARD"}, "due_kind": {"S": "shard"},
                                 "due_at": {"N": str(100 + shard)}})


def timed(call):
    started = time.process_time()
    answer = call()
    return time.process_time() - started, answer


def pages(backend) -> tuple[list[float], list]:
    """The shard read through as the sender's scan reads it: (CPU seconds per page, the items)."""
    seconds, items, start = [], [], None
    while True:
        spent, (page, _, start) = timed(lambda start=start: backend.query(
            TABLE, SHARD, "BETWEEN", [{"S": recipient_sk(0)}, {"S": recipient_sk(LAST_SEQ)}],
            SCAN_PAGE, start, True, None, None, True))
        seconds.append(spent)
        items += [item.to_json() for item in page]
        if not start:
            return seconds, items


def due_shards(backend) -> tuple[float, list]:
    spent, (found, _, _) = timed(lambda: backend.query(
        TABLE, None, "LT", [{"N": "1000"}], None, None, True, None, "DueIndex", False,
        hash_key_conditions=[("due_kind", {"S": "shard"})],
        range_key_conditions=[("due_at", "LT", [{"N": "1000"}])]))
    return spent, [item.to_json() for item in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10000)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    with mock_aws():
        boto3.client("dynamodb").create_table(**table_definition(load_template(), TABLE))
        backend = dynamodb_backends["123456789012"]["us-east-1"]
        fill(backend, args.recipients)
        stock_pages, stock_items = pages(backend)
        stock_due, stock_found = due_shards(backend)
        cheap_queries(Table)
        our_pages, our_items = pages(backend)
        our_due, our_found = due_shards(backend)
    assert (our_items, our_found) == (stock_items, stock_found), "answers differ from moto's own"
    print(f"{args.recipients} recipients in the shard read, {args.recipients * 2} items in the table; "
          f"pages of {SCAN_PAGE}; CPU ms per call")
    print("| query | stock moto | local/moto_server.py | stock / ours |")
    print("|---|---|---|---|")
    for name, stock, ours in (
        (f"shard page, median of {len(stock_pages)}", statistics.median(stock_pages), statistics.median(our_pages)),
        ("shard page, worst", max(stock_pages), max(our_pages)),
        ("whole shard", sum(stock_pages), sum(our_pages)),
        ("DueIndex (a recovery tick's)", stock_due, our_due),
    ):
        print(f"| {name} | {stock * 1000:.0f} | {ours * 1000:.0f} | {stock / ours:.1f} |")


if __name__ == "__main__":
    main()
