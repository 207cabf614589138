"""`make bench`: first the figure a user gets (the `make up` path, without and with status webhooks, beside
the BullMQ peer on the same fake), then every other benchmark script, each printing its table."""

from __future__ import annotations

import json
import subprocess
import sys
import time

# What a user gets: `make up` as it starts, one 2 000-recipient campaign at rate 80 through the HTTP API,
# counted at an independent fake capped at 80 mps (bench/graphfake.py); then the same sends through BullMQ.
USER_PATH = [
    ("make up, 2 000 recipients at rate 80", ["bench.userpath", "--rounds", "3"]),
    ("make up, with signed status webhooks (sent, delivered) to /webhook", ["bench.userpath", "--rounds", "3",
                                                                           "--webhooks"]),
    ("BullMQ (Redis), the same sends, its limiter at 80 mps", ["bench.bullmq", "--rounds", "3"]),
]

SCRIPTS = [
    ["bench.costs", "--finished", "10", "1000", "10000"],
    # 10 000 recipients take 8.6 minutes here on their own; 5 000 keep this part under 10.
    ["bench.throughput", "--recipients", "5000"],
    # The shard is 10 000 recipients (2.5 minutes here); 5 000 say the same in half the time.
    ["bench.lambda_share", "--recipients", "5000"],
    ["bench.recovery"],
    ["bench.in_doubt"],
    ["bench.in_doubt", "--webhooks"],
    ["bench.numbers"],
    ["bench.scale"],
    ["bench.store_query"],
    ["bench.stores"],
    # 100 000 recipients written to the store (~40 s here), then exported through the gateway (~12 s).
    ["bench.export"],
]


def run(script: str, args: list[str]) -> str:
    print(f"\n## {script} {' '.join(args)}\n", flush=True)
    began = time.monotonic()
    lines = []
    with subprocess.Popen([sys.executable, "-m", script, *args], stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:  # as it comes
            print(line, end="", flush=True)
            lines.append(line)
    if child.returncode:
        raise SystemExit(f"{script} exited {child.returncode}")
    print(f"\n({script}: {time.monotonic() - began:.0f} s)", flush=True)
    return "".join(lines)


if __name__ == "__main__":
    started = time.monotonic()
    headline = []
    for label, (script, *args) in USER_PATH:
        figures = json.loads(run(script, args).strip().splitlines()[-1])
        headline.append((label, figures))
    print("\n## What a user gets (counted at the fake; the bound is its cap of 80 mps)\n")
    print("| path | msg/s (min / median / max) | ratio to the cap (min / median / max) | 130429s per round |")
    print("|---|---|---|---|")
    for label, figures in headline:
        rate, ratio = figures["msg_per_s"], figures["ratio_to_cap"]
        print(f"| {label} | {rate['min']} / {rate['median']} / {rate['max']} | "
              f"{ratio['min']} / {ratio['median']} / {ratio['max']} | {figures['refused_130429']} |", flush=True)
    for script, *args in SCRIPTS:
        run(script, args)
    print(f"\nmake bench: {time.monotonic() - started:.0f} s in all")
