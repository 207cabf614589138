"""The local DynamoDB candidates side by side: the sender's own claim and checkpoint writes, closed loop.

For each store (moto's server as local/moto_server.py runs it; stock dynalite in memory; dynalite as
local/dynalite.js runs it, in memory and on disk as `make up` runs it), in turn and in alternation over `--rounds`: a fresh server, the table from
template.yaml, then `--threads` threads each claiming and checkpointing fresh recipients of one shard
partition with the ledger's own two conditional UpdateItems for `--seconds`. Printed: writes/s answered,
and the store process's CPU milliseconds per write (from /proc), min / median / max over the rounds.

    python -m bench.stores [--threads 8] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from local.storage import DynaliteServer, MotoServer, aws_env, create_table

TABLE = "campaigns"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def probe(url: str, pid: int, threads: int, seconds: float) -> tuple[float, float]:
    """(writes/s, store CPU ms per write) of `threads` closed loops of claim + checkpoint."""
    os.environ.update(aws_env(url, TABLE))  # this process is the probe's own (see main)
    from campaigns import ledger
    from campaigns.models import Recipient, recipient_sk

    per_thread = int(seconds * 400)
    lanes = [[Recipient(f"CAMPAIGN#probe#SHARD#{n}", recipient_sk(seq), phone="919800000000", import_id="probe",
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
    cpu_before, started = process_cpu(pid), time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed, cpu = time.monotonic() - started, process_cpu(pid) - cpu_before
    writes = sum(done)
    return writes / elapsed, 1000 * cpu / writes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probe", nargs=2, metavar=("URL", "PID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:  # one probe, in a process of its own: the endpoint is read when the models load
        print(json.dumps(probe(args.probe[0], int(args.probe[1]), args.threads, args.seconds)))
        return
    stores = {
        "moto (local/moto_server.py)": lambda: MotoServer(),
        "stock dynalite 4.0.0, in memory": lambda: DynaliteServer(stock=True),
        "dynalite (local/dynalite.js), in memory": lambda: DynaliteServer(),
        "dynalite (local/dynalite.js), on disk (make up)": lambda: DynaliteServer(data_dir=tempfile.mkdtemp(prefix="stores-")),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
    for _ in range(args.rounds):
        for name, make in stores.items():
            with make() as server:
                create_table(server.url, TABLE)
                done = subprocess.run([sys.executable, "-m", "bench.stores", "--threads", str(args.threads),
                                       "--seconds", str(args.seconds), "--probe", server.url, str(server.pid)],
                                      capture_output=True, text=True, check=True)
                figures[name].append(tuple(json.loads(done.stdout.splitlines()[-1])))
    print(f"the sender's claim + checkpoint from {args.threads} threads, {args.seconds:g} s a round, "
          f"{args.rounds} rounds (min / median / max)\n")
    print("| store | writes/s | store CPU per write (ms) |")
    print("|---|---|---|")
    for name, values in figures.items():
        rates, cpus = [v[0] for v in values], [v[1] for v in values]
        print(f"| {name} | {min(rates):.0f} / {statistics.median(rates):.0f} / {max(rates):.0f} | "
              f"{min(cpus):.2f} / {statistics.median(cpus):.2f} / {max(cpus):.2f} |")


if __name__ == "__main__":
    main()
