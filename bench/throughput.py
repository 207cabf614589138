"""Throughput against the provider's cap, as a ratio to the bound this machine allows.

One campaign of N recipients through the local stack (real sender processes, moto, the fake Graph
API with 50 ms ±20 % latency), capped at 80 mps, then at 1 000 mps. The bound of each run is
min(cap, what the local DynamoDB server takes at the writes per message counted), both
measured in the same run: the server's capacity by a closed loop of the sender's own claim and
checkpoint writes from as many threads as a sender has sends in flight (the mean of a probe
just before and one just after the campaign), the writes per message by the server itself
counting the calls it answered while the campaign ran (local/moto_server.py).

    .venv/bin/python -m bench.throughput [--recipients 10000] [--caps 80 1000] [--rounds 1]

With --rounds N, each cap runs N times (probes and campaign each time) and the median ratio of
each cap is printed under the table: this VM's speed drifts by ±10 % within a minute, so one
round's ratio is one draw.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

from bench.dynamo import READS, WRITES
from local.stack import LocalStack, StackConfig
from local.storage import MotoServer, free_port

# What the functions print (their logs and EMF metric lines) goes here, not into the table.
LOG = os.path.join(tempfile.gettempdir(), "bench-functions.log")


def dynamodb_capacity(threads: int, seconds: float = 10.0) -> float:
    """The sender's writes per second the local DynamoDB server completes, closed loop.

    Each thread claims and checkpoints fresh recipients, one after the other, with the ledger's
    own two writes (the very expressions a send costs the store), from as many threads as the
    sender keeps sends in flight. Ten seconds span a few of the server's full garbage
    collections (a tenth of a second or more each, every several seconds): a shorter probe
    read ±10 % depending on whether it caught one.
    """
    per_thread = int(seconds * 25)  # more than a thread claims and checkpoints in `seconds` here (~10/s)
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
    """Send one campaign; its rate, and the store's calls per message counted by the store itself."""
    from campaigns import service
    from campaigns.config import settings

    stack.fake.reset()
    stack.fake.configure(rate_cap_mps=cap)
    campaign = _campaign(recipients, rate=cap)
    before = stack.moto.operation_counts()
    started = time.time()
    service.send(campaign.id, settings())
    # Watch the fake (in this process) rather than poll the store: polling would load the very
    # server whose capacity bounds the run. The store is read once the fake has every send, and
    # every 10 s before that (a campaign can complete with a recipient in doubt, never sent).
    polls = 0
    while True:
        time.sleep(0.5)  # a benchmark polling for the end, not a test
        polls += 1
        if (stack.fake.stats()["accepted"] >= recipients or polls % 20 == 0) and _status(campaign.id) == "completed":
            break
        if time.time() - started > 1800:
            raise RuntimeError("campaign did not complete in 30 minutes")
    calls = stack.moto.operation_counts() - before
    mine = sorted(s["at"] for s in stack.fake.sends() if s["callback"].startswith(campaign.id))
    stats = stack.fake.stats()
    return {
        "recipients": recipients,
        "sent": len(mine),
        "unsent": recipients - len(mine),  # in doubt (under the default policy `skip`) or failed
        "mps": (len(mine) - 1) / (mine[-1] - mine[0]),
        "writes_per_message": sum(calls[op] for op in WRITES) / len(mine),
        "reads_per_message": sum(calls[op] for op in READS) / len(mine),
        "throttled": stats["by_code"].get("130429", 0),
        "duplicates": stats["duplicates"],
        "shards": int(campaign.shard_count),
    }


def measure(config: StackConfig, moto: MotoServer, recipients: int, cap: int) -> tuple[float, dict, float]:
    """One round on an emptied store: moto slows as its table grows (tens of thousands of items
    from earlier rounds made calls queue past the 10-s read timeout), so rounds start equal."""
    moto.reset()
    with LocalStack(config, moto=moto, with_scheduler=True, log_path=LOG) as stack:
        # Probed on the same server just before and just after the run: the mean pairs the
        # bound with the machine's speed during the run (a 2-core VM's speed drifts by tens of %).
        before = dynamodb_capacity(config.max_in_flight)
        result = run_campaign(stack, recipients, cap)
        capacity = (before + dynamodb_capacity(config.max_in_flight)) / 2
    return capacity, result, min(cap, capacity / result["writes_per_message"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--caps", type=int, nargs="+", default=[80, 1000])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each cap; the median ratio is printed")
    args = parser.parse_args()
    config = StackConfig(table_name="bench", fake_latency_ms=50, fake_latency_jitter=0.2,
                         lease_seconds=20, heartbeat_seconds=1.0, max_in_flight=8, batch_seconds=900,
                         recovery_interval_seconds=60,
                         lambda_port=free_port())  # one for every round, like the store: clients here keep it
    print("| cap (mps) | shards | recipients | achieved (mps) | store capacity (writes/s) | writes/msg | reads/msg "
          "| bound (mps) | ratio | 130429s | duplicates | unsent |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    ratios: dict[int, list[float]] = {cap: [] for cap in args.caps}
    with MotoServer() as moto:  # one server: this process's DynamoDB client keeps its address
        for cap in [cap for _ in range(args.rounds) for cap in args.caps]:
            capacity, r, bound = measure(config, moto, args.recipients, cap)
            ratios[cap].append(r["mps"] / bound)
            print(f"| {cap} | {r['shards']} | {r['recipients']} | {r['mps']:.1f} | {capacity:.0f} "
                  f"| {r['writes_per_message']:.3f} "
                  f"| {r['reads_per_message']:.3f} | {bound:.1f} | {r['mps'] / bound:.3f} | {r['throttled']} "
                  f"| {r['duplicates']} | {r['unsent']} |", flush=True)
    if args.rounds > 1:
        for cap, of_cap in ratios.items():
            print(f"cap {cap}: median ratio {statistics.median(of_cap):.3f} of {len(of_cap)} rounds "
                  f"({min(of_cap):.3f}–{max(of_cap):.3f})")
    print("bound = min(cap, store capacity / writes per message); capacity: the sender's claim and checkpoint "
          f"writes from {config.max_in_flight} threads, closed loop, mean of a probe just before and one just after each run; "
          f"calls per message: counted by the store during the run; each round on an emptied store. Function logs: {LOG}")


if __name__ == "__main__":
    main()
