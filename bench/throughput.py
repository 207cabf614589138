"""Throughput against the provider's cap, as a ratio to the bound this machine allows.

One campaign of N recipients through the local stack (real sender processes, moto, the fake Graph
API with 50 ms ±20 % latency), capped at 80 mps, then at 1 000 mps. The bound of each run is
min(cap, what the local DynamoDB server takes at the writes per message counted), both measured
in the same run by the server itself (local/moto_server.py records each call it answers and the
CPU time of the thread that served it):

- the store's capacity is a core's worth of this run's writes: 1 / (store CPU seconds per write,
  the CPU of the thread that served it plus an equal share per call of what the server spends
  outside calls, accepting connections and starting their threads). moto's server is one Python
  process (one GIL: a core at most); the benchmark gives it a core of its own and runs everything
  else on the others, as DynamoDB is not on the senders' machine. What else the store spends its
  core on (reads) and the time it idles with no call to answer are not capacity: they show as a
  ratio under 1.
- writes per message: the writes the store answered while the campaign ran, over messages sent
  (every sender process's heartbeats included).

So the ratio is the share of the store's core that the campaign's writes kept busy. As a
cross-check from outside, a closed loop of the sender's own claim and checkpoint writes from as
many threads as a sender has sends in flight probes the store's capacity just before and just
after the run (`probe`). The two differ by the VM's drift: the store's CPU per call moved by up to
half from one minute to the next here, which a probe minutes away from the run cannot see.

    .venv/bin/python -m bench.throughput [--recipients 10000] [--caps 80 1000] [--rounds 1]

With --rounds N, each cap runs N times and the median ratio of each cap is printed.
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


def _pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` on `cores`; threads and processes they start inherit it."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), cores)


def give_the_store_a_core(store: MotoServer) -> int:
    """The store alone on one core, this process (and all it starts from now on) on the others;
    returns the core's number."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench.throughput needs two cores: one for the store, one for the rest")
    _pin(store.pid, {cores[0]})
    _pin(os.getpid(), set(cores[1:]))
    return cores[0]


def dynamodb_capacity(threads: int, seconds: float = 10.0) -> float:
    """The sender's writes per second the local DynamoDB server completes, closed loop.

    Each thread claims and checkpoints fresh recipients, one after the other, with the ledger's
    own two writes (the very expressions a send costs the store), from as many threads as the
    sender keeps sends in flight. Ten seconds span a few of the server's full garbage
    collections (a tenth of a second or more each, every several seconds): a shorter probe
    read ±10 % depending on whether it caught one.
    """
    per_thread = int(seconds * 40)  # more than a thread claims and checkpoints in `seconds` here (~10/s)
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
    """Send one campaign; its rate, and what the store answered and spent while it ran."""
    from campaigns import service
    from campaigns.config import settings

    stack.fake.reset()
    stack.fake.configure(rate_cap_mps=cap)
    campaign = _campaign(recipients, rate=cap)
    before = stack.moto.usage()
    started = time.monotonic()
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
        if time.monotonic() - started > 1800:
            raise RuntimeError("campaign did not complete in 30 minutes")
    used = stack.moto.usage() - before
    elapsed = time.monotonic() - started
    mine = sorted(s["at"] for s in stack.fake.sends() if s["callback"].startswith(campaign.id))
    stats = stack.fake.stats()
    writes = sum(used.calls[op] for op in WRITES)
    # What the server spends outside any call (accepting connections, starting their threads) is
    # a cost of every call: each takes an equal share.
    overhead_per_call = max(0.0, used.process_cpu_seconds - sum(used.cpu_seconds.values())) / sum(used.calls.values())
    return {
        "recipients": recipients,
        "sent": len(mine),
        "unsent": recipients - len(mine),  # in doubt (under the default policy `skip`) or failed
        "mps": (len(mine) - 1) / (mine[-1] - mine[0]),
        "writes_per_message": writes / len(mine),
        "reads_per_message": sum(used.calls[op] for op in READS) / len(mine),
        "cpu_per_write": sum(used.cpu_seconds[op] for op in WRITES) / writes + overhead_per_call,
        "store_busy": used.process_cpu_seconds / elapsed,  # from the send to the completion seen
        "throttled": stats["by_code"].get("130429", 0),
        "duplicates": stats["duplicates"],
        "shards": int(campaign.shard_count),
    }


def measure(config: StackConfig, moto: MotoServer, recipients: int, cap: int) -> dict:
    """One round on an emptied store: moto slows as its table grows (tens of thousands of items
    from earlier rounds made calls queue past the 10-s read timeout), so rounds start equal."""
    moto.reset()
    with LocalStack(config, moto=moto, with_scheduler=True, log_path=LOG) as stack:
        probe_before = dynamodb_capacity(config.max_in_flight)
        r = run_campaign(stack, recipients, cap)
        r["probe"] = (probe_before + dynamodb_capacity(config.max_in_flight)) / 2
    r["capacity"] = 1 / r["cpu_per_write"]
    r["bound"] = min(cap, r["capacity"] / r["writes_per_message"])
    r["probe_bound"] = min(cap, r["probe"] / r["writes_per_message"])
    return r


COLUMNS = [  # heading, format of a result
    ("cap (mps)", "{cap}"), ("shards", "{shards}"), ("recipients", "{recipients}"),
    ("achieved (mps)", "{mps:.1f}"), ("writes/msg", "{writes_per_message:.3f}"),
    ("reads/msg", "{reads_per_message:.3f}"), ("store CPU/write (ms)", "{cpu_ms:.2f}"),
    ("store capacity (writes/s)", "{capacity:.0f}"), ("bound (mps)", "{bound:.1f}"), ("ratio", "{ratio:.3f}"),
    ("store busy", "{store_busy:.2f}"), ("probe (writes/s)", "{probe:.0f}"), ("ratio to probe", "{probe_ratio:.3f}"),
    ("130429s", "{throttled}"), ("duplicates", "{duplicates}"), ("unsent", "{unsent}"),
]


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
    print("| " + " | ".join(heading for heading, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    ratios: dict[int, list[float]] = {cap: [] for cap in args.caps}
    with MotoServer() as moto:  # one server: this process's DynamoDB client keeps its address
        store_core = give_the_store_a_core(moto)
        for cap in [cap for _ in range(args.rounds) for cap in args.caps]:
            r = measure(config, moto, args.recipients, cap)
            ratios[cap].append(r["mps"] / r["bound"])
            row = dict(r, cap=cap, cpu_ms=1000 * r["cpu_per_write"], ratio=r["mps"] / r["bound"],
                       probe_ratio=r["mps"] / r["probe_bound"])
            print("| " + " | ".join(fmt.format(**row) for _, fmt in COLUMNS) + " |", flush=True)
    if args.rounds > 1:
        for cap, of_cap in ratios.items():
            print(f"cap {cap}: median ratio {statistics.median(of_cap):.3f} of {len(of_cap)} rounds "
                  f"({min(of_cap):.3f}–{max(of_cap):.3f})")
    print(f"bound = min(cap, store capacity / writes per message), both from the store's own count of this run's "
          f"calls and its CPU time on them; capacity = 1 / (store CPU per write): the store runs alone on core "
          f"{store_core}. store busy: the store process's CPU over the run's time. probe: the sender's claim and "
          f"checkpoint writes from {config.max_in_flight} threads, closed loop, mean of a probe just before and one "
          f"just after the run. Each round on an emptied store. Function logs: {LOG}")


if __name__ == "__main__":
    main()
