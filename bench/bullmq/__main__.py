"""The BullMQ peer of bench.userpath: the same 2 000 sends, the same fake, BullMQ's own limiter at 80 mps.

Each round: bench/graphfake.py as in bench.userpath (50 ms ± 20 %, 80 sends per number per sliding second,
130429 above it), Debian's redis-server on 127.0.0.1 (no persistence), and bench/bullmq/worker.js (bullmq
pinned in bench/bullmq/package.json), which queues one job per recipient and works them off with one
worker, `limiter: {max: 80, duration: 1000}`. The figures are counted at the fake exactly as
bench.userpath counts them (accepted sends over the time from the first to the last, over the cap).

    python -m bench.bullmq [--recipients 2000] [--rate 80] [--rounds 3] [--concurrency 16]

`make bench` installs what it needs (`npm ci` in bench/bullmq, `apt-get install redis-server` when it is
missing). The last line is JSON, as bench.userpath's: {"path": "bullmq", "ratio_to_cap": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.userpath import CpuMeter, GraphFake, figures, spread, wait_until
from local.storage import free_port, port_in_use

HERE = Path(__file__).resolve().parent


def missing() -> str | None:
    if not shutil.which("redis-server"):
        return "redis-server is not installed (make bench installs Debian's redis-server)"
    if not shutil.which("node"):
        return "Node.js (`node`) is not on PATH"
    if not (HERE / "node_modules" / "bullmq").is_dir():
        return "bullmq is not installed: run `make bench` (npm ci in bench/bullmq)"
    return None


def one_round(args) -> dict:
    token = secrets.token_urlsafe(16)
    fake = GraphFake(args.cap, args.latency_ms, args.jitter, token)
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_in_use(redis_port), 10, "redis to listen")
        meter = CpuMeter([fake.process.pid, redis.pid])
        worker = subprocess.Popen(["node", str(HERE / "worker.js"), "--redis-port", str(redis_port), "--graph",
                                   fake.url, "--token", token, "--recipients", str(args.recipients), "--rate",
                                   str(args.rate), "--concurrency", str(args.concurrency)],
                                  stdout=subprocess.PIPE, text=True)
        meter.roots.append(worker.pid)
        out, _ = worker.communicate(timeout=args.timeout)
        cpu = meter.stop()
        if worker.returncode != 0:
            raise RuntimeError(f"bench/bullmq/worker.js exited {worker.returncode}")
        done = json.loads(out.strip().splitlines()[-1])
        stats = fake.stats()
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        fake.stop()
    result = figures(args, stats, {"status": f"{done['completed']} completed, {done['failed']} failed"}, [],
                     done["started_at"], cpu)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bullmq", description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=80, help="BullMQ's limiter: jobs per second")
    parser.add_argument("--cap", type=int, default=80, help="the fake's sends per number per sliding second")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=16, help="the worker's jobs at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"bench.bullmq: {reason}", file=sys.stderr)
        return 2
    rounds = []
    for n in range(args.rounds):
        started = time.monotonic()
        result = one_round(args)
        rounds.append(result)
        cpu = ", ".join(f"{role} {v['cpu_s']} s" for role, v in result["cpu"].items())
        print(f"round {n + 1}: {result['msg_per_s']} msg/s = {result['ratio_to_cap']} of the cap "
              f"(from the first job {result['msg_per_s_from_send']}), 130429: {result['refused_130429']}, "
              f"duplicates: {result['duplicates']}, at the cap {result['seconds_at_cap']} of {result['seconds']} s; "
              f"CPU: {cpu} ({time.monotonic() - started:.0f} s)", flush=True)
    print(json.dumps({
        "path": "bullmq", "recipients": args.recipients, "rate": args.rate, "cap": args.cap,
        "ratio_to_cap": spread([r["ratio_to_cap"] for r in rounds]),
        "msg_per_s": spread([r["msg_per_s"] for r in rounds]),
        "refused_130429": [r["refused_130429"] for r in rounds], "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
