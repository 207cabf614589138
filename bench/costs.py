"""What a campaign costs, all in: the import, the sender and the status webhooks, measured per message.

Runs, in this process so that their DynamoDB calls, CPU and log bytes can be counted: two imports
of 10 000 recipients (the API's import path; its largest request), the real sender batch against the
fake Graph API, then Meta's three status webhooks per message (sent, delivered, read), each a signed
POST through the local gateway's dispatch to the webhook handler, as template.yaml routes it. The
store is dynalite, as `make up` runs it (`--store moto` for moto's server), and moto's server holds
the secret, each in its own process. The last line is JSON: `usd_per_100k_all_in` and
`write_units_per_message` (sender plus the three statuses), for a user to check.

    .venv/bin/python -m bench.costs [--messages 2000] [--store dynalite|moto]

Measured here: write and read units (by DynamoDB's sizing rules, bench/dynamo.py), the handlers'
CPU time, the bytes they log. Taken from template.yaml: memory, the webhook's front door, tracing,
log levels. Assumed (stated in docs/operations.md): Lambda's CPU share is memory / 1 769 MB of one
vCPU, a DynamoDB call takes 5 ms in region, ~3 statuses per message, and the list prices below.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

from bench.dynamo import local_store
from local.fakegraph import FakeGraphProcess
from local.storage import MotoServer, aws_env, create_secret, create_table
from local.template import functions, load_template

TABLE = "bench-costs"


def send_campaign(messages: int):
    """Send one campaign through in-process batches; returns (meter, cpu seconds, wall seconds)."""
    from bench.dynamo import metered
    from campaigns import lease as leases
    from campaigns import lifecycle, service
    from campaigns.config import settings
    from campaigns.models import Campaign
    from campaigns.sender import ShardBatch

    cfg = settings()
    spec = service.CampaignSpec(name="bench", phone_number_id="1", rate=80,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, cfg)
    service.add_recipients(campaign.id, [service.RecipientRow(f"9198{n:08d}") for n in range(messages)])
    lifecycle.wake(campaign.id, [0])
    lifecycle.transition(campaign.id, "send", [Campaign.open_shards.set({0})])
    token = leases.new_token()
    leases.hand_to(campaign.id, 0, token, leases.free_or_expired(time.time()), cfg)
    cpu, wall = time.process_time(), time.perf_counter()
    # The EMF metric lines the batch prints (as on Lambda) would bury the table: set them aside.
    with metered() as meter, contextlib.redirect_stdout(io.StringIO()):
        report = ShardBatch({"campaign_id": campaign.id, "shard": 0, "token": token}, lambda: 900.0, cfg).run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert report.get("sent") == messages, report
    return meter, cpu, wall, campaign.id


# List prices, us-east-1, arm64, as published in 2026 (docs/operations.md itemises a campaign).
LAMBDA_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1e6
DYNAMODB_WRITE_UNIT = 0.625 / 1e6
DYNAMODB_READ_UNIT = 0.125 / 1e6
BATCH_SECONDS = 900 - 15  # a batch hands off when its remaining time nears the margin


IMPORT_ROWS = 10_000  # the API's largest import request: a 100 000-recipient list arrives as ten


def import_costs(rows: int = IMPORT_ROWS, requests: int = 2):
    """`requests` imports of `rows` recipients each into one campaign through the API's path
    (validation, dedupe against the earlier imports' number books, suppression, books, commit):
    their meter, and how many recipients it covers."""
    from bench.dynamo import metered
    from campaigns import imports, service
    from campaigns.config import settings

    spec = service.CampaignSpec(name="import", phone_number_id="1", rate=80,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, settings())
    with metered() as meter:
        for request in range(requests):
            parsed = imports.parse_items([{"phone": f"+9197{request:02d}{n:06d}", "variables": []}
                                          for n in range(rows)], 0)
            service.import_recipients(campaign.id, parsed)
    return meter, rows * requests


STATUS_KINDS = ("sent", "delivered", "read")  # what Meta posts for a message that is read


def status_body(rec, kind: str, at: int) -> bytes:
    """One status webhook as Meta posts it (docs/api.md, Webhook)."""
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "waba", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000",
                                                          "phone_number_id": "1"},
            "statuses": [{"id": rec.wamid, "status": kind, "timestamp": str(at), "recipient_id": rec.phone,
                          "biz_opaque_callback_data": rec.callback_key,
                          "pricing": {"billable": True, "pricing_model": "PMP", "category": "marketing"}}]}}]}]},
        separators=(",", ":")).encode()


class _LoggedBytes:
    """Bytes written to this process's stdout and stderr (fds 1 and 2: Lambda logs both) in a block."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = [os.dup(1), os.dup(2)]
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        self.bytes = self._file.seek(0, os.SEEK_END)
        self._file.close()


def webhook_costs(campaign_id: str, app_secret: str) -> dict:
    """Every sent recipient's three statuses, in Meta's order, through the gateway's dispatch to the
    webhook handler: per kind, its write and read units, DynamoDB calls, CPU and log bytes."""
    from bench.dynamo import metered
    from campaigns import ledger
    from local.fakegraph.wire import signature_header
    from local.gateway import Gateway, HttpRequest

    gateway = Gateway(port=0, dashboard=False)
    recipients = [r for r in ledger.scan(campaign_id, 0) if r.wamid]
    per_kind = {}
    at = int(time.time())
    for kind in STATUS_KINDS:
        cpu = 0.0
        with metered() as meter, _LoggedBytes() as logged:
            for rec in recipients:
                body = status_body(rec, kind, at)
                headers = [("Content-Type", "application/json"),
                           ("X-Hub-Signature-256", signature_header(body, app_secret))]
                started = time.thread_time()
                answer = gateway.handle(HttpRequest("POST", "/webhook", headers, body))
                cpu += time.thread_time() - started
                assert answer.status == 200, answer.body
        n = len(recipients)
        per_kind[kind] = {"write_units": meter.write_units / n, "read_units": meter.read_units / n,
                          "calls": sum(meter.calls.values()) / n, "cpu_ms": cpu / n * 1000,
                          "log_bytes": logged.bytes / n}
    return per_kind


def idle_tick_reads(finished_counts: list[int]) -> list[tuple[int, float, int]]:
    """Read units of one recovery tick as finished campaigns pile up in the table."""
    from bench.dynamo import metered
    from campaigns import recovery
    from campaigns.config import settings
    from campaigns.models import Campaign, Shard

    rows, made = [], 0
    for target in finished_counts:
        with Campaign.batch_write() as batch:
            for n in range(made, target):
                cid = f"done{n:06d}"
                batch.save(Campaign(*Campaign.key(cid), id=cid, name="old", phone_number_id="1", template={},
                                    status="completed", created_at="2026-01-01T00:00:00", completed_at=1.0))
                batch.save(Shard(*Shard.key(cid, 0), campaign_id=cid, shard=0, total=100, sent=100,
                                 finished_at=1.0))
        made = target
        with metered() as meter:
            recovery.tick(settings())
        rows.append((target, meter.read_units, meter.items_read))
    return rows


# Further list prices (us-east-1, 2026): the webhook's front door per request, logs, traces.
FRONT_DOOR_PER_REQUEST = {"rest_api": 3.50 / 1e6, "http_api": 1.00 / 1e6, "function_url": 0.0}
LOGS_PER_GB = 0.50
XRAY_PER_TRACE = 5.0 / 1e6
PLATFORM_LOG_BYTES = 330  # START, END and REPORT lines of one invocation, in Lambda's text format
DYNAMODB_CALL_MS = 5.0  # one DynamoDB call's round trip in region (assumed)
LAMBDA_FULL_CPU_MB = 1769  # the memory that buys one vCPU


def webhook_front_door(template: dict) -> str:
    """What serves /webhook in template.yaml: an API Gateway REST API, an HTTP API, or a function URL."""
    webhook = template["Resources"]["WebhookFunction"]["Properties"]
    kinds = {event.get("Type") for event in (webhook.get("Events") or {}).values()}
    if "Api" in kinds:
        return "rest_api"
    if "HttpApi" in kinds:
        return "http_api"
    return "function_url" if "FunctionUrlConfig" in webhook else "rest_api"


def system_logs_kept(template: dict, logical_id: str) -> bool:
    """Whether Lambda writes its platform lines (START, END, REPORT) for the function."""
    config = template["Resources"][logical_id]["Properties"].get("LoggingConfig") or {}
    return config.get("SystemLogLevel", "INFO") in ("INFO", "DEBUG")


def tracing(template: dict, logical_id: str) -> str:
    """The function's X-Ray mode: its own, else the Globals'."""
    own = template["Resources"][logical_id]["Properties"].get("Tracing")
    return own or template.get("Globals", {}).get("Function", {}).get("Tracing", "PassThrough")


def all_in(messages: int, measured: int, imported, sent, statuses: dict, template: dict, rate: float = 80.0) -> dict:
    """The dollars of a `messages`-message campaign, item by item, from the figures measured: the
    import's (meter, recipients), the sender's meter over `measured` messages, the statuses' per message."""
    import_meter, import_recipients = imported
    specs = functions(template)
    sender_mb, webhook_mb = specs["SenderFunction"].memory_mb, specs["WebhookFunction"].memory_mb
    sending_seconds = messages / rate
    sender_invocations = max(1, -(-sending_seconds // BATCH_SECONDS))
    webhooks = messages * len(statuses)
    webhook_seconds = sum(
        (s["cpu_ms"] * LAMBDA_FULL_CPU_MB / webhook_mb + s["calls"] * DYNAMODB_CALL_MS) / 1000 for s in statuses.values())
    webhook_gb_s = messages * webhook_seconds * webhook_mb / 1024
    door = webhook_front_door(template)
    write_units = messages * (import_meter.write_units / import_recipients + sent.write_units / measured
                              + sum(s["write_units"] for s in statuses.values()))
    read_units = messages * (import_meter.read_units / import_recipients + sent.read_units / measured
                             + sum(s["read_units"] for s in statuses.values()))
    log_bytes = messages * sum(s["log_bytes"] for s in statuses.values()) + webhooks * (
        PLATFORM_LOG_BYTES if system_logs_kept(template, "WebhookFunction") else 0)
    # X-Ray's fixed sampling for Lambda: the first request each second, then 5 % of the rest.
    webhook_traces = (sending_seconds + 0.05 * max(0.0, webhooks - sending_seconds)
                      if tracing(template, "WebhookFunction") == "Active" else 0.0)
    items = {
        "lambda_sender": sending_seconds * sender_mb / 1024 * LAMBDA_GB_SECOND + sender_invocations * LAMBDA_REQUEST,
        "lambda_webhook": webhook_gb_s * LAMBDA_GB_SECOND + webhooks * LAMBDA_REQUEST,
        f"front_door_{door}": webhooks * FRONT_DOOR_PER_REQUEST[door],
        "dynamodb_writes": write_units * DYNAMODB_WRITE_UNIT,
        "dynamodb_reads": read_units * DYNAMODB_READ_UNIT,
        "logs": log_bytes / 1e9 * LOGS_PER_GB,
        "xray": (webhook_traces + sender_invocations) * XRAY_PER_TRACE,
    }
    return {"items": items, "total": sum(items.values()), "front_door": door, "webhook_gb_s": webhook_gb_s,
            "write_units": write_units, "read_units": read_units, "log_bytes": log_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--finished", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--store", choices=("dynalite", "moto"), default="dynalite",
                        help="the DynamoDB (default: dynalite, as make up runs it; it keeps connections open "
                             "between calls, as DynamoDB does for a Lambda's pooled client)")
    args = parser.parse_args()
    template = load_template()
    with MotoServer() as moto, local_store(args.store, moto) as store:
        os.environ.update({**aws_env(moto.url, TABLE), "AWS_ENDPOINT_URL_DYNAMODB": store.url})
        # The functions' own log level (template.yaml's LogLevel default); metrics on, as deployed.
        os.environ.update(POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_NAMESPACE="WhatsAppCampaigns",
                          POWERTOOLS_SERVICE_NAME="bench", POWERTOOLS_LOG_LEVEL=str(
                              template["Parameters"]["LogLevel"]["Default"]), MAX_IN_FLIGHT="16")
        create_table(store.url, TABLE)
        token, app_secret = "bench-token", "bench-app-secret"
        os.environ["WHATSAPP_SECRET_ARN"] = create_secret(moto.url, {"access_token": token, "app_secret": app_secret,
                                                                     "verify_token": "v"})
        with FakeGraphProcess(token=token, latency_ms=20) as fake:
            os.environ["GRAPH_API_URL"] = fake.url
            imported = import_costs()
            meter, cpu, wall, campaign_id = send_campaign(args.messages)
            statuses = webhook_costs(campaign_id, app_secret)
            ticks = idle_tick_reads(args.finished)
    n = args.messages
    print(f"# sender batch: {n} messages in {wall:.1f}s ({n / wall:.0f} msg/s, capped by the campaign rate 80)")
    print("| figure | value | bound |")
    print("|---|---|---|")
    print(f"| DynamoDB writes per message (all) | {meter.writes / n:.3f} | target ≤ 2 + overhead |")
    per_message = meter.calls["UpdateItem"] / n
    print(f"| UpdateItem per message (claim + checkpoint + amortised heartbeats) | {per_message:.3f} | 2 + ε |")
    print(f"| TransactWriteItems | {meter.calls['TransactWriteItems']} | 0 |")
    print(f"| DynamoDB reads per message (Query/Get calls) | "
          f"{(meter.calls['Query'] + meter.calls['GetItem']) / n:.3f} | |")
    print(f"| sender CPU per message (in-process, incl. HTTP client and pynamodb) | {cpu / n * 1000:.2f} ms | |")
    print(f"| DynamoDB write units per message sent (sender) | {meter.write_units / n:.3f} WCU | |")
    print(f"| DynamoDB read units per message sent (sender) | {meter.read_units / n:.3f} RCU | |")
    import_meter, import_recipients = imported
    print(f"| import ({import_recipients} recipients in requests of {IMPORT_ROWS}): write / read units per recipient "
          f"| {import_meter.write_units / import_recipients:.3f} WCU / {import_meter.read_units / import_recipients:.3f} RCU | |")
    for kind, s in statuses.items():
        print(f"| webhook `{kind}`: write / read units, DynamoDB calls, CPU, log bytes | {s['write_units']:.3f} WCU / "
              f"{s['read_units']:.3f} RCU, {s['calls']:.2f} calls, {s['cpu_ms']:.2f} ms, {s['log_bytes']:.0f} B | |")
    for finished, units, items in ticks:
        print(f"| recovery tick with {finished} finished campaigns | {units:.1f} RCU, {items} items read | flat |")
    print(f"\ncalls: {dict(meter.calls)}")
    campaign = all_in(100_000, n, imported, meter, statuses, template)
    print(f"\n| item of a 100 000-message campaign (webhook front door: {campaign['front_door']}) | USD |")
    print("|---|---|")
    for item, usd in campaign["items"].items():
        print(f"| {item} | {usd:.3f} |")
    print(f"| **all in** | **{campaign['total']:.3f}** |")
    print(f"Lambda ${LAMBDA_GB_SECOND:.10f}/GB-s + ${LAMBDA_REQUEST * 1e6:.2f}/M requests; DynamoDB on-demand "
          f"${DYNAMODB_WRITE_UNIT * 1e6:.3f}/M WRU, ${DYNAMODB_READ_UNIT * 1e6:.3f}/M RRU; API Gateway REST $3.50/M, "
          f"HTTP API $1.00/M, function URL $0; logs ${LOGS_PER_GB}/GB; X-Ray $5/M traces. Webhook time: its CPU "
          f"here × {LAMBDA_FULL_CPU_MB} MB / its memory + {DYNAMODB_CALL_MS:g} ms a DynamoDB call.")
    per_message = meter.write_units / n + sum(s["write_units"] for s in statuses.values())
    print(json.dumps({"usd_per_100k_all_in": round(campaign["total"], 3),
                      "write_units_per_message": round(per_message, 3),
                      "write_units_per_status": {k: round(s["write_units"], 3) for k, s in statuses.items()},
                      "import_write_units_per_recipient": round(import_meter.write_units / import_recipients, 3),
                      "front_door": campaign["front_door"]}))


if __name__ == "__main__":
    main()
