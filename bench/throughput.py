"""Throughput against the provider's cap, as a ratio to the bound this machine allows.

One campaign of N recipients through the local stack (real sender processes, moto, the fake Graph
API with 50 ms ±20 % latency), capped at 80 mps, then at 1 000 mps. The bound of each run is
min(cap, what the local DynamoDB server takes at the writes per message we counted), both
measured in the same run: moto's capacity by a closed loop of conditional updates from 16
threads, the writes per message by counting an in-process batch.

    .venv/bin/python -m bench.throughput [--recipients 10000] [--caps 80 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import threading
import time

from local.stack import LocalStack, StackConfig

# What the functions print (their logs and EMF metric lines) goes here, not into the table.
LOG = os.path.join(tempfile.gettempdir(), "bench-functions.log")


def dynamodb_capacity(seconds: float = 5.0, threads: int = 16, per_thread: int = 150) -> float:
    """The sender's writes per second the local DynamoDB server completes, closed loop.

    Each thread claims and checkpoints fresh recipients, one after the other, with the ledger's
    own two writes (the very expressions a send costs the store), from as many threads as the
    sender keeps sends in flight.
    """
    from campaigns import ledger
    from campaigns.models import Recipient, recipient_sk

    lanes = [[Recipient(f"PROBE#{n}", recipient_sk(seq), phone="919800000000", import_id="probe",
                        variables=["Asha"]) for seq in range(per_thread)] for n in range(threads)]
    with Recipient.batch_write() as batch:
        for rec in (rec for lane in lanes for rec in lane):
            batch.save(rec)
    done = [0] * threads
    stop = time.monotonic() + seconds

    def loop(n: int) -> None:
        for rec in lanes[n]:
            if time.monotonic() >= stop:
                return
            ledger.claim(rec, "probe", time.time())
            ledger.mark_sent(rec, "probe", "wamid.probe", time.time())
            done[n] += 2

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.monotonic() - started)


def writes_per_message(messages: int = 300) -> float:
    """Count the DynamoDB writes of an in-process batch, per message sent."""
    from bench.dynamo import metered
    from campaigns import lease as leases
    from campaigns import service
    from campaigns.config import settings
    from campaigns.sender import ShardBatch

    cfg = settings()
    campaign = _campaign(messages, rate=80)
    service._wake(campaign.id, [0])
    service._transition(campaign.id, "send", [service.Campaign.open_shards.set({0})])
    token = leases.new_token()
    leases.hand_to(campaign.id, 0, token, leases.free_or_expired(time.time()), cfg)
    with metered() as meter, contextlib.redirect_stdout(io.StringIO()):
        ShardBatch({"campaign_id": campaign.id, "shard": 0, "token": token}, lambda: 900.0, cfg).run()
    return meter.writes / messages


def _campaign(recipients: int, rate: int):
    from campaigns import service
    from campaigns.config import settings

    spec = service.CampaignSpec(name="bench", phone_number_id="1234567890", rate=rate,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, settings())
    rows = [service.RecipientRow(f"9198{n:08d}") for n in range(recipients)]
    for start in range(0, recipients, 5000):
        service.add_recipients(campaign.id, rows[start:start + 5000])
    return campaign


def _status(campaign_id: str) -> str:
    from campaigns import service
    from campaigns.config import settings

    return service.campaign_status(campaign_id, settings())["status"]


def run_campaign(stack: LocalStack, recipients: int, cap: int) -> dict:
    from campaigns import service
    from campaigns.config import settings

    stack.fake.reset()
    stack.fake.configure(rate_cap_mps=cap)
    campaign = _campaign(recipients, rate=cap)
    started = time.time()
    service.send(campaign.id, settings())
    # Watch the fake (in this process) rather than poll the store: polling would load the very
    # server whose capacity bounds the run. The store is read once the fake has every send.
    while stack.fake.stats()["accepted"] < recipients or _status(campaign.id) != "completed":
        time.sleep(0.5)  # a benchmark polling for the end, not a test
        if time.time() - started > 1800:
            raise RuntimeError("campaign did not complete in 30 minutes")
    mine = sorted(s["at"] for s in stack.fake.sends() if s["callback"].startswith(campaign.id))
    stats = stack.fake.stats()
    return {
        "sent": len(mine),
        "mps": (len(mine) - 1) / (mine[-1] - mine[0]),
        "throttled": stats["by_code"].get("130429", 0),
        "duplicates": stats["duplicates"],
        "shards": int(campaign.shard_count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--caps", type=int, nargs="+", default=[80, 1000])
    args = parser.parse_args()
    config = StackConfig(table_name="bench", fake_latency_ms=50, fake_latency_jitter=0.2,
                         lease_seconds=20, heartbeat_seconds=1.0, max_in_flight=16, batch_seconds=120,
                         recovery_interval_seconds=60)
    with LocalStack(config, with_scheduler=True, log_path=LOG) as stack:
        capacity = dynamodb_capacity()
        wpm = writes_per_message()
        rows = []
        for cap in args.caps:
            result = run_campaign(stack, args.recipients, cap)
            bound = min(cap, capacity / wpm)
            rows.append((cap, result, bound))
    print(f"local DynamoDB (moto server): {capacity:.0f} conditional updates/s (16 threads, closed loop); "
          f"counted writes per message: {wpm:.3f}")
    print("| cap (mps) | shards | recipients | achieved (mps) | bound (mps) | ratio | 130429s | duplicates |")
    print("|---|---|---|---|---|---|---|---|")
    for cap, r, bound in rows:
        print(f"| {cap} | {r['shards']} | {r['sent']} | {r['mps']:.1f} | {bound:.1f} | {r['mps'] / bound:.3f} "
              f"| {r['throttled']} | {r['duplicates']} |")


if __name__ == "__main__":
    main()
