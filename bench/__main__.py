"""`make bench`: every benchmark script, one after the other, each printing its table."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPTS = [
    ["bench.costs", "--finished", "10", "1000", "10000"],
    # 10 000 recipients take 8.6 minutes here on their own; 5 000 keep `make bench` under 10.
    ["bench.throughput", "--recipients", "5000"],
    # The shard is 10 000 recipients (2.5 minutes here); 5 000 say the same in half the time.
    ["bench.lambda_share", "--recipients", "5000"],
    ["bench.recovery"],
    ["bench.scale"],
    ["bench.store_query"],
]

if __name__ == "__main__":
    started = time.monotonic()
    for script, *args in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        began = time.monotonic()
        subprocess.run([sys.executable, "-m", script, *args], check=True)
        print(f"\n({script}: {time.monotonic() - began:.0f} s)", flush=True)
    print(f"\nmake bench: {time.monotonic() - started:.0f} s in all")
