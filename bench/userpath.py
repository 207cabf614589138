"""What a user gets from `make up`: one campaign through the HTTP API, counted at an independent fake.

Each round starts the stack exactly as `make up` does (`python -m local.up`, in a process of its own, with
its defaults), except that GRAPH_API_URL points at bench/graphfake.py (50 ms ± 20 %, a sliding-second cap
of 80 sends per phone number, Graph error 130429 above it) and the ports and the store's folder are the
round's own. Then, through the HTTP API: a campaign at `"rate": 80`, 2 000 recipients imported as CSV,
`POST /campaigns/{id}/send`, and `GET /campaigns/{id}` once a second until it completes. With `--webhooks`
the fake also posts signed status webhooks (`sent`, then `delivered`) to the stack's `/webhook`.

The figure is counted at the fake: accepted sends over the time from the first to the last of them
(msg/s), and that over the cap (ratio); also from the `send` call to the last accepted send. The bound is
the provider's cap, never a component of ours. Also printed: the fake's 130429 answers, duplicates (a
callback key accepted twice), the status's `current_rate` against what the fake counted over the same
seconds, and the CPU seconds each process of the stack spent (read from /proc while the round runs).

    python -m bench.userpath [--recipients 2000] [--rate 80] [--rounds 3] [--webhooks]

The last line is JSON: {"path": "make up", "webhooks": ..., "rounds": [...], "ratio_to_cap": {"min", "median",
"max"}, "msg_per_s": {...}}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from local.storage import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
PHONE_NUMBER_ID = "1234567890"
TEMPLATE = {"name": "bench_offer", "language": "en_US",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}]}]}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def wait_until(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


class GraphFake:
    """bench/graphfake.py in a process of its own."""

    def __init__(self, cap: int, latency_ms: float, jitter: float, token: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.graphfake", "--port", str(self.port), "--cap", str(cap),
             "--latency-ms", str(latency_ms), "--jitter", str(jitter), "--token", token],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers():
            try:
                return requests.get(f"{self.url}/_stats", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(answers, 10, "the fake to answer")

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_stats", timeout=10).json()

    def configure(self, **config) -> None:
        requests.post(f"{self.url}/_config", json=config, timeout=10).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class MakeUp:
    """`python -m local.up`, as `make up` runs it, with GRAPH_API_URL at the fake."""

    def __init__(self, graph_url: str, token: str, data_dir: str, log_path: str):
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        env = {**os.environ, "API_PORT": str(self.api_port), "GRAPH_API_URL": graph_url, "WHATSAPP_TOKEN": token,
               "PHONE_NUMBER_ID": PHONE_NUMBER_ID, "FUNCTION_LOG": log_path, "LOCAL_DATA_DIR": data_dir}
        self.process = subprocess.Popen([sys.executable, "-m", "local.up"], cwd=REPO_ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"make up exited: {self.process.stderr.read()[-2000:]}")
            self.lines.append(line.rstrip())
            if line.startswith("CLI:"):
                break
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        threading.Thread(target=self.process.stderr.read, daemon=True).start()

    def url_of(self, label: str) -> str:
        for line in self.lines:
            words = line.split()
            if words and words[0] == label:
                return words[1]
        raise RuntimeError(f"make up printed no {label!r} line: {self.lines}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def app_secret(up: MakeUp) -> str:
    """The app secret the stack verifies webhooks with, from its local Secrets Manager."""
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=up.url_of("Secrets"), region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
    name = next(s["Name"] for s in client.list_secrets()["SecretList"] if s["Name"].startswith("whatsapp-"))
    return json.loads(client.get_secret_value(SecretId=name)["SecretString"])["app_secret"]


# -- CPU of the stack's processes -------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU seconds, reaped children's CPU seconds) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, \
        (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def _role(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv).decode(errors="replace")
    if "local.lambda_process" in text:
        handler = next(arg for arg in argv[argv.index(b"local.lambda_process") + 1:] if arg.endswith(b".py"))
        return "lambda:" + Path(handler.decode()).parent.name
    if "local.up" in text:
        return "up (gateway, webhook, runtime, scheduler)"
    if "moto_server" in text:
        return "store (moto)"
    if "dynalite" in text:
        return "store (dynalite)"
    if "worker.js" in text:
        return "worker (node, bullmq)"
    if "redis-server" in text:
        return "redis"
    if "bench.graphfake" in text:
        return "fake"
    return text[:40]


class CpuMeter:
    """Samples /proc every 0.2 s: the CPU seconds of every descendant of the roots, by role."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.seen: dict[int, tuple[str, float]] = {}
        self.start: dict[int, float] = {}
        self._stop = threading.Event()
        self.sample()
        self.start = {pid: cpu for pid, (_, cpu) in self.seen.items()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _stat(int(entry))
                if stat:
                    children.setdefault(stat[0], []).append(int(entry))
        todo = list(self.roots)
        while todo:
            pid = todo.pop()
            stat = _stat(pid)
            if stat is None:
                continue
            role = self.seen[pid][0] if pid in self.seen else _role(pid)
            self.seen[pid] = (role, stat[1])
            todo += children.get(pid, [])

    def stop(self) -> dict[str, dict]:
        self._stop.set()
        self._thread.join()
        self.sample()
        by_role: dict[str, dict] = {}
        for pid, (role, cpu) in self.seen.items():
            entry = by_role.setdefault(role, {"processes": 0, "cpu_s": 0.0})
            entry["processes"] += 1
            entry["cpu_s"] += cpu - self.start.get(pid, 0.0)
        return {role: {**v, "cpu_s": round(v["cpu_s"], 1)} for role, v in sorted(by_role.items())}


# -- one round -------------------------------------------------------------------------------------------


def one_round(args, round_no: int) -> dict:
    token = secrets.token_urlsafe(16)
    fake = GraphFake(args.cap, args.latency_ms, args.jitter, token)
    data_dir = tempfile.mkdtemp(prefix="userpath-store-")
    log_path = os.path.join(data_dir, "functions.log")
    up = MakeUp(fake.url, token, data_dir, log_path)
    try:
        if args.webhooks:
            fake.configure(webhook_url=f"{up.api}/webhook", app_secret=app_secret(up))
        session = requests.Session()
        created = session.post(f"{up.api}/campaigns", timeout=30, json={
            "name": f"userpath {round_no}", "phone_number_id": PHONE_NUMBER_ID, "rate": args.rate,
            "in_doubt_policy": "skip", "template": TEMPLATE})
        created.raise_for_status()
        campaign_id = created.json()["id"]
        rows = "phone,name\n" + "".join(f"+9198{n:08d},Customer {n}\n" for n in range(args.recipients))
        session.post(f"{up.api}/campaigns/{campaign_id}/recipients", data=rows.encode(), timeout=120,
                     headers={"Content-Type": "text/csv"}).raise_for_status()
        meter = CpuMeter([up.process.pid, fake.process.pid])
        sent_at = time.time()
        session.post(f"{up.api}/campaigns/{campaign_id}/send", timeout=30).raise_for_status()
        samples = []  # (time, current_rate, accepted at the fake)
        status = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            time.sleep(1.0)
            status = session.get(f"{up.api}/campaigns/{campaign_id}", timeout=30).json()
            samples.append((time.time(), status.get("current_rate"), fake.stats()["accepted"]))
            if status.get("status") != "sending":
                break
        cpu = meter.stop()
        if args.webhooks:  # let the last statuses land before the round's figures are read (the backlog stays
            # in the figures if they do not)
            with contextlib.suppress(RuntimeError):
                wait_until(lambda: fake.stats()["webhooks"]["backlog"] == 0, 120, "the webhook backlog", 0.5)
        stats = fake.stats()
        stats["gaps"] = gaps(requests.get(f"{fake.url}/_arrivals", timeout=10).json())
    finally:
        up.stop()
        fake.stop()
    return figures(args, stats, status, samples, sent_at, cpu)


def gaps(arrivals: list[float], longer_than: float = 0.15) -> list[list[float]]:
    """The pauses between two accepted sends longer than `longer_than` seconds: [seconds into the run, length]."""
    return [[round(b - arrivals[0], 2), round(b - a, 3)] for a, b in zip(arrivals, arrivals[1:], strict=False)
            if b - a > longer_than]


def figures(args, stats: dict, status: dict, samples: list, sent_at: float, cpu: dict) -> dict:
    accepted, cap = stats["accepted"], args.cap
    span = (stats["last_accepted"] or 0) - (stats["first_accepted"] or 0)
    steady = (accepted - 1) / span if accepted > 1 and span > 0 else 0.0
    from_send = accepted / ((stats["last_accepted"] or sent_at) - sent_at) if accepted else 0.0
    # current_rate against the fake's count over the same seconds (3-s windows of the samples),
    # while the shard sends at its pace (not its first or last seconds)
    pairs = []
    for (t0, _, a0), (t1, rate, a1) in zip(samples, samples[3:], strict=False):
        counted = (a1 - a0) / (t1 - t0)
        if rate is not None and counted > 0.5 * args.rate and a1 < accepted:
            pairs.append((float(rate), counted))
    per_second = [counts[0] for counts in list(stats["per_second"].values())[1:-1]]
    return {
        "recipients": args.recipients, "status": status.get("status"), "accepted": accepted,
        "msg_per_s": round(steady, 1), "ratio_to_cap": round(steady / cap, 3),
        "msg_per_s_from_send": round(from_send, 1), "refused_130429": stats["refused"],
        "duplicates": stats["duplicates"],
        "seconds_at_cap": sum(1 for n in per_second if n >= cap - 1), "seconds": len(per_second),
        "current_rate_median": round(statistics.median(r for r, _ in pairs), 1) if pairs else None,
        "fake_rate_median": round(statistics.median(c for _, c in pairs), 1) if pairs else None,
        "current_rate_over_fake_max": round(max(r / c for r, c in pairs), 2) if pairs else None,
        "webhooks": stats["webhooks"], "cpu": cpu,
        "arrivals_per_second": [counts[0] for counts in stats["per_second"].values()],
        "gaps": stats.get("gaps", []),
        "refused_at": stats.get("refused_at", []),
    }


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": round(statistics.median(values), 3), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.userpath", description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=80, help="the campaign's rate")
    parser.add_argument("--cap", type=int, default=80, help="the fake's sends per number per sliding second")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--webhooks", action="store_true", help="the fake posts signed sent/delivered webhooks")
    parser.add_argument("--timeout", type=float, default=600.0, help="a round's longest wait for completion")
    args = parser.parse_args(argv)
    rounds = []
    for n in range(args.rounds):
        result = one_round(args, n + 1)
        rounds.append(result)
        cpu = ", ".join(f"{role} {v['cpu_s']} s ({v['processes']})" for role, v in result["cpu"].items())
        print(f"round {n + 1}: {result['msg_per_s']} msg/s = {result['ratio_to_cap']} of the cap "
              f"(from the send call {result['msg_per_s_from_send']}), 130429: {result['refused_130429']}, "
              f"duplicates: {result['duplicates']}, at the cap {result['seconds_at_cap']} of {result['seconds']} s, "
              f"current_rate {result['current_rate_median']} vs counted {result['fake_rate_median']}, "
              f"webhooks {result['webhooks']}; CPU: {cpu}", flush=True)
    print(json.dumps({
        "path": "make up", "webhooks": args.webhooks, "recipients": args.recipients, "rate": args.rate,
        "cap": args.cap, "ratio_to_cap": spread([r["ratio_to_cap"] for r in rounds]),
        "msg_per_s": spread([r["msg_per_s"] for r in rounds]),
        "refused_130429": [r["refused_130429"] for r in rounds], "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
