"""Exporting a big campaign's recipients as CSV through the local gateway: time, size, pages.

The local stack as `make up` runs it (dynalite, the gateway in front of the API handler), one campaign
whose `--recipients` (100 000) are written to the store directly with the outcomes a sent campaign has
(70 % read, 10 % delivered, 8 % sent, 7 % failed with Graph's code and message, 3 % skipped, 2 % in
doubt; each with its variables, wamid and claim, as the sender leaves them). Then, over HTTP, exactly as
`campaignctl export` does: `GET /campaigns/{id}/recipients.csv`, following each answer's `Link: rel="next"`
until there is none. Checked: one header a page, every recipient exactly once. Measured: each page's
time (request to last byte), its CSV bytes and its size as Lambda would return it (the body escaped as
a JSON string, against Lambda's 6 MB), and the whole export's.

    .venv/bin/python -m bench.export [--recipients 100000] [--rate 80] [--limit 10000] [--status failed]

The last line is JSON: {"recipients", "rows", "pages", "seconds", "bytes", "page_seconds": {"median", "max"},
"page_bytes_max", "page_lambda_bytes_max", ...}.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import tempfile
import time
import uuid
from urllib.parse import urljoin

import requests

from local.stack import LocalStack, StackConfig
from local.storage import free_port

LOG = os.path.join(tempfile.gettempdir(), "bench-export.log")
LAMBDA_LIMIT = 6 * 1024 * 1024
WAMID = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQzE2RjQ5RjM2NzFBRDc4QTBGAA=="


def outcome(n: int, now: float) -> dict:
    """The fields a recipient has once its campaign was sent (a fixed mix by position)."""
    share = n % 100
    sent = {"status": "sent", "attempts": 1, "claimed_by": "b" + "0" * 31, "claimed_at": now - 60,
            "wamid": WAMID, "sent_at": now - 59.5}
    if share < 70:
        return {**sent, "delivered_at": now - 58, "read_at": now - 30}
    if share < 80:
        return {**sent, "delivered_at": now - 58}
    if share < 88:
        return sent
    if share < 95:
        return {**sent, "status": "failed", "sent_at": None, "wamid": None, "failed_at": now - 59,
                "error_code": 131049, "error_message": "This message was not delivered to maintain healthy "
                                                       "ecosystem engagement."}
    if share < 98:
        return {"status": "skipped", "error_message": "opted out: replied STOP"}
    return {"status": "in_doubt", "attempts": 1, "claimed_by": "b" + "0" * 31, "claimed_at": now - 60,
            "in_doubt_at": now - 50}


def populate(recipients: int, rate: int) -> str:
    """A campaign and its recipients, written as an import and its sends would leave them."""
    from campaigns import imports, lifecycle, service
    from campaigns.config import settings
    from campaigns.models import Campaign, Recipient, Shard, recipient_sk, shard_pk
    from campaigns.states import IMPORTABLE

    spec = service.CampaignSpec(name="bench export", phone_number_id="1234567890", rate=rate,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, settings())
    shards, import_id, now = int(campaign.shard_count), uuid.uuid4().hex, time.time()
    Campaign(*Campaign.key(campaign.id)).update(actions=[Campaign.recipient_count.add(recipients)])
    items = []
    for n in range(recipients):
        fields = {k: v for k, v in outcome(n, now).items() if v is not None}
        items.append(Recipient(shard_pk(campaign.id, n % shards), recipient_sk(n // shards), phone=f"9198{n:08d}",
                               variables=[f"Customer {n}", "20%"], import_id=import_id, **fields))
    imports.batch_save(items)
    lifecycle.update_while(campaign.id, IMPORTABLE, "import recipients into", [Campaign.imports.add({import_id})])
    for shard in range(shards):
        Shard(*Shard.key(campaign.id, shard)).update(actions=[Shard.total.add(len(range(shard, recipients, shards)))])
    return campaign.id


def export(url: str, campaign_id: str, limit: int | None, status: str | None) -> dict:
    """Every page through HTTP, following Link; the rows checked, each page timed and measured."""
    session = requests.Session()
    query = "&".join(f"{k}={v}" for k, v in (("status", status), ("limit", limit)) if v)
    next_url = f"{url}/campaigns/{campaign_id}/recipients.csv" + (f"?{query}" if query else "")
    pages, phones, began = [], [], time.monotonic()
    while next_url:
        started = time.monotonic()
        response = session.get(next_url, timeout=60)
        took = time.monotonic() - started
        response.raise_for_status()
        lines = list(csv.reader(io.StringIO(response.text, newline="")))
        if lines[0][0] != "phone":
            raise SystemExit(f"page {len(pages) + 1} has no header")
        phones += [line[0] for line in lines[1:]]
        pages.append({"seconds": took, "rows": len(lines) - 1, "bytes": len(response.content),
                      "lambda_bytes": len(json.dumps(response.text))})
        link = response.links.get("next")
        next_url = urljoin(response.url, link["url"]) if link else None
    seconds = time.monotonic() - began
    if len(phones) != len(set(phones)):
        raise SystemExit(f"{len(phones) - len(set(phones))} rows exported twice")
    total = sum(p["bytes"] for p in pages)
    times = [p["seconds"] for p in pages]
    return {
        "rows": len(phones),
        "pages": len(pages),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(phones) / seconds),
        "bytes": total,
        "bytes_per_row": round(total / max(1, len(phones)), 1),
        "page_rows_max": max(p["rows"] for p in pages),
        "page_seconds": {"median": round(statistics.median(times), 3), "max": round(max(times), 3)},
        "page_bytes_max": max(p["bytes"] for p in pages),
        "page_lambda_bytes_max": max(p["lambda_bytes"] for p in pages),
        "page_lambda_share_of_6mb_max": round(max(p["lambda_bytes"] for p in pages) / LAMBDA_LIMIT, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=80, help="the campaign's rate (its shards: one per 80)")
    parser.add_argument("--limit", type=int, help="rows a page (default: the API's, 10 000)")
    parser.add_argument("--status", help="export only this status")
    args = parser.parse_args()
    config = StackConfig(table_name="bench-export", local_data_dir="", api_port=free_port())
    with LocalStack(config, with_scheduler=False, log_path=LOG) as stack:
        stack.start_gateway(dashboard=False)
        began = time.monotonic()
        campaign_id = populate(args.recipients, args.rate)
        written = time.monotonic() - began
        result = export(stack.gateway.url, campaign_id, args.limit, args.status)
    if args.status is None and result["rows"] != args.recipients:
        raise SystemExit(f"{result['rows']} rows exported of {args.recipients} recipients")
    result = {"recipients": args.recipients, "status": args.status, "limit": args.limit, **result,
              "store_write_seconds": round(written, 1)}
    print(f"# {result['rows']} rows in {result['pages']} pages: {result['seconds']} s "
          f"({result['rows_per_s']} rows/s), {result['bytes'] / 1e6:.1f} MB ({result['bytes_per_row']} B a row); "
          f"a page at most {result['page_seconds']['max']} s and {result['page_bytes_max'] / 1e6:.2f} MB "
          f"({result['page_lambda_share_of_6mb_max']:.0%} of Lambda's 6 MB as it would return it)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
