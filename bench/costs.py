"""Per-message DynamoDB writes, sender CPU per message, and the read cost of an idle recovery tick.

Runs the real sender batch in this process (so its DynamoDB calls and CPU can be counted)
against moto's server and the fake Graph API, each in its own process.

    .venv/bin/python -m bench.costs [--messages 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

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
    return meter, cpu, wall


# List prices, us-east-1, arm64, as published in 2026 (docs/operations.md itemises a campaign).
LAMBDA_GB_SECOND = 0.0000133334
LAMBDA_REQUEST = 0.20 / 1e6
DYNAMODB_WRITE_UNIT = 0.625 / 1e6
DYNAMODB_READ_UNIT = 0.125 / 1e6
# Fixed by the design, not measured here: Meta posts ~3 status webhooks per message (sent,
# delivered, read), each a 512 MB webhook invocation of ~40 ms writing the recipient and, for
# delivered and read, a counter of its shard. The sender's memory is template.yaml's.
WEBHOOKS_PER_MESSAGE = 3
WEBHOOK_GB_SECONDS = 0.5 * 0.040
WEBHOOK_WRITE_UNITS = 3 + 2
SENDER_GB = functions(load_template())["SenderFunction"].memory_mb / 1024
BATCH_SECONDS = 900 - 15  # a batch hands off when its remaining time nears the margin


def lambda_and_dollars(meter, messages: int, rate: float = 80.0) -> list[tuple]:
    """Lambda invocations and GB-s per 10 000 messages, and the cost of a 100 000-message campaign.

    The sender's time is the campaign's pace on Lambda (one shard at `rate`), not this machine's:
    the batch here runs as fast as the local store lets it.
    """
    rows = []
    for n in (10_000, 100_000):
        sender_seconds = n / rate
        sender_invocations = max(1, -(-sender_seconds // BATCH_SECONDS))
        webhook_invocations = n * WEBHOOKS_PER_MESSAGE
        gb_seconds = sender_seconds * SENDER_GB + webhook_invocations * WEBHOOK_GB_SECONDS
        write_units = n * (meter.write_units / messages + WEBHOOK_WRITE_UNITS)
        read_units = n * meter.read_units / messages
        dollars = (gb_seconds * LAMBDA_GB_SECOND + (sender_invocations + webhook_invocations) * LAMBDA_REQUEST
                   + write_units * DYNAMODB_WRITE_UNIT + read_units * DYNAMODB_READ_UNIT)
        rows.append((n, int(sender_invocations), webhook_invocations, gb_seconds, write_units, read_units, dollars))
    return rows


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--finished", type=int, nargs="+", default=[10, 1000])
    args = parser.parse_args()
    with MotoServer() as moto:
        os.environ.update(aws_env(moto.url, TABLE))
        os.environ.update(POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="true",
                          POWERTOOLS_LOG_LEVEL="WARNING", MAX_IN_FLIGHT="16")
        create_table(moto.url, TABLE)
        token = "bench-token"
        os.environ["WHATSAPP_SECRET_ARN"] = create_secret(moto.url, {"access_token": token})
        with FakeGraphProcess(token=token, latency_ms=20) as fake:
            os.environ["GRAPH_API_URL"] = fake.url
            meter, cpu, wall = send_campaign(args.messages)
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
    for finished, units, items in ticks:
        print(f"| recovery tick with {finished} finished campaigns | {units:.1f} RCU, {items} items read | flat |")
    print(f"\ncalls: {dict(meter.calls)}")
    print("\n| messages | sender invocations | webhook invocations | Lambda GB-s | DynamoDB WCU | DynamoDB RCU "
          "| Lambda + DynamoDB (USD) |")
    print("|---|---|---|---|---|---|---|")
    for size, senders, webhooks, gb_s, wcu, rcu, usd in lambda_and_dollars(meter, n):
        print(f"| {size:,} | {senders} | {webhooks:,} | {gb_s:,.0f} | {wcu:,.0f} | {rcu:,.0f} | {usd:.2f} |")
    print(f"At 80 mps per shard; webhooks at Meta's ~{WEBHOOKS_PER_MESSAGE} statuses per message "
          f"({WEBHOOK_GB_SECONDS:g} GB-s and {WEBHOOK_WRITE_UNITS} WCU each). List prices us-east-1 arm64: Lambda "
          f"${LAMBDA_GB_SECOND:.10f}/GB-s + ${LAMBDA_REQUEST * 1e6:.2f}/M requests, DynamoDB on-demand "
          f"${DYNAMODB_WRITE_UNIT * 1e6:.3f}/M WRU, ${DYNAMODB_READ_UNIT * 1e6:.3f}/M RRU. "
          "API Gateway in front of the webhooks, logs and X-Ray: docs/operations.md.")


if __name__ == "__main__":
    main()
