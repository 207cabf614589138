"""One shard at the provider's cap with the sender held to the CPU share Lambda gives it.

Lambda gives a function CPU in proportion to its memory: 1 769 MB is one vCPU. This runs one shard
of N recipients at rate 80 (the fake Graph API capping the number at 80 mps, 50 ms ±20 % latency)
with the sender batch, `campaigns.sender.ShardBatch` with production's settings (32 sends in
flight, 1-second heartbeat, metrics and logs on), in a process of its own whose CPU is capped by a
cgroup v1 CFS quota at template.yaml's SenderFunction MemorySize / 1 769 of a core. The store
(dynalite, as `make up` runs it; `--store moto` for moto's server) and the fake run outside the
quota, as DynamoDB and Meta's servers are not on the
function's machine. Counted at the fake: accepted sends per second between the 2nd second after
the first arrival and the 2nd before the last (start and drain excluded).

The store is dynalite by default because DynamoDB's CPU is not the function's: moto's server spends
8 times dynalite's CPU on a conditional write (bench.stores) and, sharing these two cores with the
sender and the fake, becomes the bound instead of the quota under test.

What binds is printed beside the figure: the sender's CPU against its quota (and how many of the
quota's periods it was throttled in), and the store's CPU against its one core (each store is one
process). With --pin-store the store gets a core of its own and the sender and the fake share the
other, as bench.throughput does; without, the three share the machine's cores.

Needs root and the cgroup v1 cpu controller at /sys/fs/cgroup/cpu.

    .venv/bin/python -m bench.lambda_share [--recipients 10000] [--memory-mb M] [--store dynalite|moto] [--pin-store]

The last line is JSON: {"ratio_to_cap", "msg_per_s", "cpu_share", "memory_mb", ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.dynamo import local_store
from local.fakegraph import FakeGraphProcess
from local.storage import MotoServer, aws_env, create_secret, create_table
from local.template import functions, load_template

TABLE = "bench-lambda-share"
CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
LAMBDA_MB_PER_VCPU = 1769  # Lambda's documented point of one full vCPU
CFS_PERIOD_US = 100_000  # the kernel's default period; the quota is this share of it
BATCH_SECONDS = 900.0  # the SenderFunction's Timeout: a batch's remaining time, as on Lambda
EDGE_SECONDS = 2.0  # left out at each end of the arrivals: the start's ramp and the drain
SAMPLE_SECONDS = 0.5
LOG = os.path.join(tempfile.gettempdir(), "bench-lambda-share.log")  # the batch's logs and EMF lines


def sender_memory_mb() -> int:
    return functions(load_template())["SenderFunction"].memory_mb


class CpuQuota:
    """A child cgroup of the cpu controller holding its processes to `share` of one CPU."""

    def __init__(self, share: float):
        if os.geteuid() != 0:
            raise SystemExit("bench.lambda_share needs root: it creates a cgroup to cap the sender's CPU")
        if not (CGROUP_ROOT / "cpu.cfs_quota_us").exists():
            raise SystemExit(f"bench.lambda_share needs the cgroup v1 cpu controller at {CGROUP_ROOT}")
        self.share = share
        self.path = CGROUP_ROOT / f"bench-lambda-share-{os.getpid()}"

    def __enter__(self) -> CpuQuota:
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(round(self.share * CFS_PERIOD_US)))
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))  # its threads, and all it starts later

    def stat(self) -> dict[str, int]:
        return {k: int(v) for k, v in (line.split() for line in (self.path / "cpu.stat").read_text().splitlines())}

    def __exit__(self, *exc) -> None:
        # A cgroup with processes in it cannot be removed: hand back any that are left.
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.procs").write_text(pid)
        self.path.rmdir()


def _pin(pid: int, cores: set[int]) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cores)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def prepare_campaign(recipients: int, rate: int) -> tuple[str, str]:
    """A sending campaign of one shard, its lease handed to the batch about to start (as `send` does)."""
    from campaigns import lease as leases
    from campaigns import lifecycle, service
    from campaigns.config import settings

    cfg = settings()
    spec = service.CampaignSpec(name="lambda-share", phone_number_id="1", rate=rate,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, cfg)
    rows = [service.RecipientRow(f"9198{n:08d}") for n in range(recipients)]
    for start in range(0, recipients, 5000):
        service.add_recipients(campaign.id, rows[start:start + 5000])
    lifecycle.wake(campaign.id, [0])
    lifecycle.transition(campaign.id, "send", [service.Campaign.open_shards.set({0})])
    token = leases.new_token()
    leases.hand_to(campaign.id, 0, token, leases.free_or_expired(time.time()), cfg)
    return campaign.id, token


def run_child(campaign_id: str, token: str) -> None:
    """The sender batch, as the SenderFunction runs it: its report is the last line it prints."""
    from campaigns.config import settings
    from campaigns.sender import run_batch

    deadline = time.monotonic() + BATCH_SECONDS
    report = run_batch({"campaign_id": campaign_id, "shard": 0, "token": token},
                       lambda: deadline - time.monotonic(), settings())
    print(json.dumps(report), flush=True)


def steady_window(arrivals: list[float]) -> tuple[float, float, float]:
    """(sends per second, start, end) between EDGE_SECONDS after the first arrival and EDGE_SECONDS
    before the last."""
    start, end = arrivals[0] + EDGE_SECONDS, arrivals[-1] - EDGE_SECONDS
    inside = [t for t in arrivals if start <= t <= end]
    return (len(inside) - 1) / (inside[-1] - inside[0]), inside[0], inside[-1]


class Sampler:
    """Every SAMPLE_SECONDS: the wall clock, the store's and the sender's CPU seconds, the quota's
    throttling counts; `over(start, end)` gives their changes between the samples nearest to both."""

    def __init__(self, store_pid: int, sender_pid: int, quota: CpuQuota):
        self.samples: list[tuple[float, float, float, int, int]] = []
        self._pids, self._quota = (store_pid, sender_pid), quota
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            try:
                stat = self._quota.stat()
                self.samples.append((time.time(), _cpu_seconds(self._pids[0]), _cpu_seconds(self._pids[1]),
                                     stat["nr_periods"], stat["nr_throttled"]))
            except (OSError, KeyError):  # the sender has exited
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def over(self, start: float, end: float) -> dict:
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        seconds = last[0] - first[0]
        return {"seconds": seconds, "store_cpu": last[1] - first[1], "sender_cpu": last[2] - first[2],
                "periods": last[3] - first[3], "throttled": last[4] - first[4]}


def measure(recipients: int, rate: int, memory_mb: int, store_name: str, pin_store: bool) -> dict:
    share = memory_mb / LAMBDA_MB_PER_VCPU
    with MotoServer() as moto, local_store(store_name, moto) as store, CpuQuota(share) as quota:
        env = {**aws_env(moto.url, TABLE), "AWS_ENDPOINT_URL_DYNAMODB": store.url,
               "POWERTOOLS_TRACE_DISABLED": "true"}  # no X-Ray daemon here
        os.environ.update(env)
        create_table(store.url, TABLE)
        os.environ["WHATSAPP_SECRET_ARN"] = create_secret(moto.url, {"access_token": "bench-token"})
        cores = sorted(os.sched_getaffinity(0))
        if pin_store:
            if len(cores) < 2:
                raise SystemExit("--pin-store needs two cores: one for the store, one for the rest")
            _pin(store.pid, {cores[0]})
            _pin(os.getpid(), set(cores[1:]))  # the fake and the sender, started below, inherit it
        nice = -10 if os.geteuid() == 0 else 0  # the fake ahead of the sender, as Meta's servers share nothing
        with FakeGraphProcess(nice=nice, token="bench-token", latency_ms=50, latency_jitter=0.2,
                              rate_cap_mps=rate) as fake:
            os.environ["GRAPH_API_URL"] = fake.url
            campaign_id, token = prepare_campaign(recipients, rate)
            with open(LOG, "w") as log:
                child = subprocess.Popen([sys.executable, "-m", "bench.lambda_share", "--child", campaign_id, token],
                                         env=os.environ.copy(), stdout=subprocess.PIPE, stderr=log, text=True)
                quota.add(child.pid)  # before it has imported anything: all of its CPU counts
                sampler = Sampler(store.pid, child.pid, quota)
                lines = []
                for line in child.stdout:  # its EMF and log lines go to the log; its report is the last
                    lines.append(line)
                    log.write(line)
                child.wait()
                sampler.stop()
            report = json.loads(lines[-1]) if lines else {}
            arrivals = sorted(send["at"] for send in fake.sends())
            stats = fake.stats()
    if child.returncode != 0 or report.get("sent") != recipients:
        raise SystemExit(f"the batch did not send every recipient: {report} (exit {child.returncode}; see {LOG})")
    msg_per_s, start, end = steady_window(arrivals)
    steady = sampler.over(start, end)
    sent_in_steady = msg_per_s * steady["seconds"]
    return {
        "ratio_to_cap": round(msg_per_s / rate, 4),
        "msg_per_s": round(msg_per_s, 2),
        "cpu_share": round(share, 4),
        "memory_mb": memory_mb,
        "recipients": recipients,
        "steady_s": round(end - start, 1),
        # Over the steady part, from the samples nearest to its ends:
        "sender_cpu_ms_per_msg": round(steady["sender_cpu"] / sent_in_steady * 1000, 2),
        "sender_cpu_of_quota": round(steady["sender_cpu"] / (share * steady["seconds"]), 3),
        "throttled_periods": f"{steady['throttled']}/{steady['periods']}",
        "store_cpu_of_core": round(steady["store_cpu"] / steady["seconds"], 3),
        "store": store_name,
        "store_pinned": pin_store,
        "refused_130429": stats["by_code"].get("130429", 0),
        "duplicates": stats["duplicates"],
        # These cores are shared with other work: a load over 2 means the store and the fake, outside
        # the quota, did not always get a core when they wanted one.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=80, help="the campaign's rate and the fake's cap (mps)")
    parser.add_argument("--memory-mb", type=int, default=None,
                        help="the function's memory (default: template.yaml's SenderFunction MemorySize)")
    parser.add_argument("--store", choices=("dynalite", "moto"), default="dynalite",
                        help="the DynamoDB the batch writes to (default: dynalite, as make up runs it)")
    parser.add_argument("--pin-store", action="store_true", help="the store on a core of its own")
    parser.add_argument("--child", nargs=2, metavar=("CAMPAIGN_ID", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return
    memory = args.memory_mb or sender_memory_mb()
    result = measure(args.recipients, args.rate, memory, args.store, args.pin_store)
    print(f"# one shard, {args.recipients} recipients at rate {args.rate}, the sender held to {memory} MB's "
          f"{result['cpu_share']:.2f} of a vCPU; {args.store} {'on a core of its own' if args.pin_store else 'sharing the cores'}")
    print(f"# sender CPU {result['sender_cpu_ms_per_msg']} ms/msg, {result['sender_cpu_of_quota']:.0%} of its quota, "
          f"throttled in {result['throttled_periods']} periods; store {result['store_cpu_of_core']:.0%} of a core")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
