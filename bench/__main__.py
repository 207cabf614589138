"""`make bench`: every benchmark script, one after the other, each printing its table."""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = [
    ["bench.costs", "--finished", "10", "1000", "10000"],
    ["bench.throughput", "--recipients", "2000"],  # 10 000 exceeds the 10-minute budget on moto
    ["bench.recovery"],
    ["bench.scale"],
]

if __name__ == "__main__":
    for script, *args in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        subprocess.run([sys.executable, "-m", script, *args], check=True)
