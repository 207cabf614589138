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
import subprocess
import sys
import time

from local.storage import MotoServer, aws_env, create_secret, create_table, free_port

TABLE = "bench-costs"


def start_fake_graph(token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.fakegraph", "--port", str(port), "--token", token, "--latency-ms", "20"],
        stdout=subprocess.PIPE, text=True,
    )
    url = process.stdout.readline().split()[-1]
    return process, url


def send_campaign(messages: int):
    """Send one campaign through in-process batches; returns (meter, cpu seconds, wall seconds)."""
    from bench.dynamo import metered
    from campaigns import lease as leases
    from campaigns import service
    from campaigns.config import settings
    from campaigns.sender import ShardBatch

    cfg = settings()
    spec = service.CampaignSpec(name="bench", phone_number_id="1", rate=80,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, cfg)
    service.add_recipients(campaign.id, [service.RecipientRow(f"9198{n:08d}") for n in range(messages)])
    service._wake(campaign.id, [0])
    service._transition(campaign.id, "send", [service.Campaign.open_shards.set({0})])
    token = leases.new_token()
    leases.hand_to(campaign.id, 0, token, leases.free_or_expired(time.time()), cfg)
    cpu, wall = time.process_time(), time.perf_counter()
    # The EMF metric lines the batch prints (as on Lambda) would bury the table: set them aside.
    with metered() as meter, contextlib.redirect_stdout(io.StringIO()):
        report = ShardBatch({"campaign_id": campaign.id, "shard": 0, "token": token}, lambda: 900.0, cfg).run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert report.get("sent") == messages, report
    return meter, cpu, wall


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
        fake, url = start_fake_graph(token)
        os.environ["GRAPH_API_URL"] = url
        try:
            meter, cpu, wall = send_campaign(args.messages)
            ticks = idle_tick_reads(args.finished)
        finally:
            fake.terminate()
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
    for finished, units, items in ticks:
        print(f"| recovery tick with {finished} finished campaigns | {units:.1f} RCU, {items} items read | flat |")
    print(f"\ncalls: {dict(meter.calls)}")


if __name__ == "__main__":
    main()
