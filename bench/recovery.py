"""Recovery time: from killing a sender batch to the next send the provider accepts.

Two kinds of death, each repeated at random points of one running campaign:
- reported: SIGKILL; the local runtime reports the failure like Lambda's on-failure
  destination, and recovery takes the shard over at once;
- silent: SIGSTOP (a frozen sandbox nobody reports); the lease expires and the next scheduled
  tick takes over. The frozen process is SIGKILLed once a new batch has sent.

    .venv/bin/python -m bench.recovery [--kills 20] [--lease 6] [--tick 3]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import tempfile
import time

from local.stack import LocalStack, StackConfig

# What the functions print (their logs and EMF metric lines) goes here, not into the table.
LOG = os.path.join(tempfile.gettempdir(), "bench-functions.log")


def live_senders(stack: LocalStack) -> list[dict]:
    return [i for i in stack.runtime.invocations() if i["function"] == "sender" and i["pid"]]


def poll(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)  # a benchmark polling, not a test
    raise TimeoutError("no progress")


def next_accept_after(stack: LocalStack, moment: float, seen: int) -> float:
    """The arrival time of the first send the fake accepted after `moment`."""
    def found():
        later = [s["at"] for s in stack.fake.sends(since=seen) if s["at"] > moment]
        return min(later) if later else None

    return poll(found, 120)


def one_death(stack: LocalStack, rng: random.Random, silent: bool) -> float:
    accepted = stack.fake.stats()["accepted"]
    poll(lambda: stack.fake.stats()["accepted"] >= accepted + rng.randint(5, 40) and live_senders(stack), 60)
    victim = rng.choice(live_senders(stack))
    seen, moment = max(0, stack.fake.stats()["accepted"] - 20), time.time()
    os.kill(victim["pid"], signal.SIGSTOP if silent else signal.SIGKILL)
    resumed = next_accept_after(stack, moment, seen)
    if silent:
        os.kill(victim["pid"], signal.SIGKILL)
    return resumed - moment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="deaths in all, half reported, half silent")
    parser.add_argument("--lease", type=float, default=6.0)
    parser.add_argument("--tick", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    config = StackConfig(table_name="bench", fake_latency_ms=50, lease_seconds=args.lease,
                         recovery_interval_seconds=args.tick, batch_seconds=300)
    times: dict[str, list[float]] = {"reported": [], "silent": []}
    with LocalStack(config, log_path=LOG) as stack:
        from campaigns import service
        from campaigns.config import settings

        spec = service.CampaignSpec(name="bench", phone_number_id="1234567890", rate=80,
                                    template={"name": "t", "language": "en_US", "components": []})
        campaign = service.create_campaign(spec, settings())
        service.add_recipients(campaign.id, [service.RecipientRow(f"9198{n:08d}") for n in range(6000)])
        service.send(campaign.id, settings())
        for n in range(args.kills):
            kind = "silent" if n % 2 else "reported"
            times[kind].append(one_death(stack, rng, silent=kind == "silent"))
        service.cancel(campaign.id)
        duplicates = stack.fake.stats()["duplicates"]
    print(f"lease {args.lease:g} s, recovery tick every {args.tick:g} s, fake latency 50 ms; duplicates: {duplicates}")
    print("| death | count | median (s) | worst (s) | bound (s) |")
    print("|---|---|---|---|---|")
    bounds = {"reported": "process start + 1 request", "silent": f"lease + tick = {args.lease + args.tick:g}"}
    for kind, values in times.items():
        print(f"| {kind} | {len(values)} | {statistics.median(values):.2f} | {max(values):.2f} | {bounds[kind]} |")


if __name__ == "__main__":
    main()
