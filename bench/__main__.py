"""`make bench`: every benchmark script, one after the other, each printing its table."""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = ["bench.costs"]

if __name__ == "__main__":
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        subprocess.run([sys.executable, "-m", script, *sys.argv[1:]], check=True)
