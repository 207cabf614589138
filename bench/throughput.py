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
- writes per message: the writes the store answered, over messages sent (every sender process's
  heartbeats included).
- both over the run's steady part, between two of the store's own readings of its counts (taken
  every 2 s): the first after the first send and the last before the last send. A run's start and
  end (13 processes starting, checkpoints drained, leases released) write at rates of their own.
- the cap and the store can each bind for part of a run, as the store's speed drifts: the bound is
  min(cap, the store's capacity then / writes per message) between each two readings, averaged
  over the steady part (`_bound`); `capped` is how many of its seconds the cap was the lower.

Where the store binds, the ratio is the share of its core that the campaign's writes kept busy. As a
cross-check from outside, a closed loop of the sender's own claim and checkpoint writes from as
many threads as a sender has sends in flight probes the store's capacity just before and just
after the run (`probe`). The two differ by the VM's drift: the store's CPU per call moved by up to
half from one minute to the next here, which a probe minutes away from the run cannot see.

    .venv/bin/python -m bench.throughput [--recipients 10000] [--caps 80 1000] [--rounds 1]

With --rounds N, each cap runs N times and the median ratio of each cap is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import secrets
import statistics
import tempfile
import threading
import time

from bench.dynamo import READS, WRITES
from campaigns.config import Settings
from local.fakegraph import FakeGraphProcess
from local.stack import LocalStack, StackConfig
from local.storage import MotoServer, StoreUsage, free_port

# What the functions print (their logs and EMF metric lines) goes here, not into the table.
LOG = os.path.join(tempfile.gettempdir(), "bench-functions.log")


def _pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` on `cores`; threads and processes they start inherit it."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that answered its call and ended meanwhile
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
    from campaigns import views
    from campaigns.config import settings

    return views.campaign_status(campaign_id, settings())["status"]


def run_campaign(stack: LocalStack, fake: FakeGraphProcess, recipients: int, cap: int) -> dict:
    """Send one campaign: its rate, and what the store answered and spent, over the whole run and
    over its steady part (from the first look at the store after the first send to the last look
    before the last send: a run's start and end, 13 processes starting up or releasing their
    leases, write at a rate of their own)."""
    from campaigns import service
    from campaigns.config import settings

    fake.reset()
    fake.configure(rate_cap_mps=cap)
    campaign = _campaign(recipients, rate=cap)
    looks = [stack.moto.usage()]
    service.send(campaign.id, settings())
    # Watch the fake rather than poll the store's tables: that would load the very server whose
    # capacity bounds the run. The store's usage is read every 2 s (a cheap count, no DynamoDB
    # call); the campaign's status once the fake has every send, and every 10 s before that (a
    # campaign can complete with a recipient in doubt, never sent).
    polls = 0
    while True:
        time.sleep(0.5)  # a benchmark polling for the end, not a test
        polls += 1
        if polls % 4 == 0:
            looks.append(stack.moto.usage())
        if (fake.stats()["accepted"] >= recipients or polls % 20 == 0) and _status(campaign.id) == "completed":
            break
        if time.time() - looks[0].taken_at > 1800:
            raise RuntimeError("campaign did not complete in 30 minutes")
    looks.append(stack.moto.usage())
    sent_at = sorted(s["at"] for s in fake.sends() if s["callback"].startswith(campaign.id))
    steady = [look for look in looks if sent_at[0] <= look.taken_at <= sent_at[-1]]
    if len(steady) < 2:
        raise SystemExit("the sends took under 4 s: no steady part to measure; use more --recipients")
    start_at, end_at = steady[0].taken_at, steady[-1].taken_at
    whole, in_steady = looks[-1] - looks[0], steady[-1] - steady[0]
    steady_sent = sum(1 for at in sent_at if start_at < at <= end_at)
    stats = fake.stats()
    writes_per_message = _writes(in_steady) / steady_sent
    bound, capped_seconds = _bound(steady, cap, writes_per_message)
    return {
        "recipients": recipients,
        "sent": len(sent_at),
        "unsent": recipients - len(sent_at),  # in doubt (under the default policy `skip`) or failed
        "mps": (len(sent_at) - 1) / (sent_at[-1] - sent_at[0]),
        "writes_per_message": _writes(whole) / len(sent_at),
        "reads_per_message": sum(whole.calls[op] for op in READS) / len(sent_at),
        "steady_seconds": end_at - start_at,
        "steady_mps": steady_sent / (end_at - start_at),
        "steady_writes_per_message": writes_per_message,
        "cpu_per_write": _cpu_per_write(in_steady),
        "bound": bound,
        "capped_seconds": capped_seconds,
        "store_busy": in_steady.process_cpu_seconds / (end_at - start_at),
        "store_on_reads": sum(in_steady.cpu_seconds[op] for op in READS) / (end_at - start_at),
        "throttled": stats["by_code"].get("130429", 0),
        "duplicates": stats["duplicates"],
        "shards": int(campaign.shard_count),
    }


def _bound(looks: list[StoreUsage], cap: int, writes_per_message: float) -> tuple[float, float]:
    """The messages/s the run could have sent at most, and the seconds of it the cap bound.

    Between two looks at the store, it could carry min(cap, its capacity then / writes per
    message). The store's speed drifts within a run (its CPU per write moved by a quarter in a
    minute here), so a run can be cap-bound for some seconds and store-bound for the others; min(cap,
    the run's mean capacity) would count the seconds the store could have gone faster than the cap
    as reachable. Where the store binds throughout, this comes close to its mean capacity."""
    possible, measured, capped = 0.0, 0.0, 0.0
    for earlier, later in itertools.pairwise(looks):
        seconds, used = later.taken_at - earlier.taken_at, later - earlier
        if not _writes(used):  # no write to time (heartbeats make this rare): no speed to read
            continue
        store_mps = 1 / _cpu_per_write(used) / writes_per_message
        possible += seconds * min(cap, store_mps)
        measured += seconds
        capped += seconds if cap < store_mps else 0.0
    return possible / measured, capped


def _writes(usage: StoreUsage) -> int:
    return sum(usage.calls[op] for op in WRITES)


def _cpu_per_write(usage: StoreUsage) -> float:
    """The store's CPU seconds per write: its thread's, and an equal share per call of what the
    server spends outside any call (accepting connections, starting their threads)."""
    outside_calls = max(0.0, usage.process_cpu_seconds - sum(usage.cpu_seconds.values()))
    return sum(usage.cpu_seconds[op] for op in WRITES) / _writes(usage) + outside_calls / sum(usage.calls.values())


def measure(config: StackConfig, moto: MotoServer, fake: FakeGraphProcess, recipients: int, cap: int) -> dict:
    """One round on an emptied store: moto slows as its table grows (tens of thousands of items
    from earlier rounds made calls queue past the 10-s read timeout), so rounds start equal."""
    moto.reset()
    with LocalStack(config, moto=moto, with_scheduler=True, log_path=LOG) as stack:
        probe_before = dynamodb_capacity(config.max_in_flight)
        r = run_campaign(stack, fake, recipients, cap)
        r["probe"] = (probe_before + dynamodb_capacity(config.max_in_flight)) / 2
    r["capacity"] = 1 / r["cpu_per_write"]
    r["ratio"] = r["steady_mps"] / r["bound"]
    r["probe_ratio"] = r["mps"] / min(cap, r["probe"] / r["writes_per_message"])
    return r


COLUMNS = [  # heading, format of a result
    ("cap (mps)", "{cap}"), ("shards", "{shards}"), ("recipients", "{recipients}"),
    ("achieved (mps)", "{mps:.1f}"), ("writes/msg", "{writes_per_message:.3f}"),
    ("reads/msg", "{reads_per_message:.3f}"), ("steady (s)", "{steady_seconds:.0f}"),
    ("steady (mps)", "{steady_mps:.1f}"), ("store CPU/write (ms)", "{cpu_ms:.2f}"),
    ("store capacity (writes/s)", "{capacity:.0f}"), ("capped (s)", "{capped_seconds:.0f}"),
    ("bound (mps)", "{bound:.1f}"), ("ratio", "{ratio:.3f}"),
    ("store busy", "{store_busy:.2f}"), ("store on reads", "{store_on_reads:.3f}"),
    ("probe (writes/s)", "{probe:.0f}"), ("ratio to probe", "{probe_ratio:.3f}"),
    ("130429s", "{throttled}"), ("duplicates", "{duplicates}"), ("unsent", "{unsent}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--caps", type=int, nargs="+", default=[80, 1000])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each cap; the median ratio is printed")
    parser.add_argument("--fake-nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="the fake's nice value (below 0 needs root; default -10 as root, else 0)")
    args = parser.parse_args()
    token = secrets.token_urlsafe(24)
    print("| " + " | ".join(heading for heading, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    ratios: dict[int, list[float]] = {cap: [] for cap in args.caps}
    with MotoServer() as moto:  # one server: this process's DynamoDB client keeps its address
        store_core = give_the_store_a_core(moto)
        # The fake in a process of its own, on the senders' core but ahead of them: the provider
        # stamps a request when it arrives, not when a process it shares with others gets to it.
        with FakeGraphProcess(nice=args.fake_nice, token=token, latency_ms=50, latency_jitter=0.2) as fake:
            config = StackConfig(table_name="bench", graph_api_url=fake.url, whatsapp_token=token,
                                 lease_seconds=20, heartbeat_seconds=1.0, batch_seconds=900,
                                 recovery_interval_seconds=60,
                                 max_in_flight=Settings.max_in_flight,  # production's, not the local stack's
                                 lambda_port=free_port())  # one for every round, like the store: clients keep it
            for cap in [cap for _ in range(args.rounds) for cap in args.caps]:
                r = measure(config, moto, fake, args.recipients, cap)
                ratios[cap].append(r["ratio"])
                row = dict(r, cap=cap, cpu_ms=1000 * r["cpu_per_write"])
                print("| " + " | ".join(fmt.format(**row) for _, fmt in COLUMNS) + " |", flush=True)
    if args.rounds > 1:
        for cap, of_cap in ratios.items():
            print(f"cap {cap}: median ratio {statistics.median(of_cap):.3f} of {len(of_cap)} rounds "
                  f"({min(of_cap):.3f}–{max(of_cap):.3f})")
    print(f"steady: from the first look at the store after the first send to the last look before the last send "
          f"(every 2 s). bound = min(cap, store capacity / writes per message) between each two looks, averaged over "
          f"the steady part; capped: its seconds in which the cap was the lower. From the store's own count of its "
          f"calls and its CPU time on them; capacity = 1 / (store CPU per write), the store alone on core "
          f"{store_core}; the capacity column is the steady part's as a whole; ratio = steady mps / bound. "
          f"store busy: the store process's CPU over the steady part; store on reads: its CPU on reads over the "
          f"steady part. probe: the sender's claim and checkpoint writes from {config.max_in_flight} threads, closed "
          f"loop, mean of a probe just before and one just after the run; ratio to probe = achieved / min(cap, "
          f"probe / writes per message). Each round on an emptied store. Function logs: {LOG}")


if __name__ == "__main__":
    main()
