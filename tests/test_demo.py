"""The incident replay end to end: `python -m local.demo` (what `make demo` runs) as its own process, with
its own stack. 678 recipients through the HTTP API, the sender SIGKILLed after 15 accepted sends, and
the verdict counted at the fake Graph API: completed, nothing lost, nothing sent twice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from local.demo import verdict
from local.stack import MAX_IN_FLIGHT_BY_STORE

REPO = Path(__file__).resolve().parent.parent
# What conftest points at the session's moto server; the demo starts and configures its own stack.
INHERITED = ("AWS_", "POWERTOOLS_", "TABLE_NAME", "SENDER_FUNCTION_NAME", "WHATSAPP_SECRET_ARN", "GRAPH_API_URL",
             "API_PORT", "LEASE_SECONDS", "HEARTBEAT_SECONDS", "MAX_IN_FLIGHT", "PHONE_NUMBER_ID")


@pytest.mark.crash
def test_make_demo_replays_the_incident_and_loses_nothing():
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    done = subprocess.run([sys.executable, "-m", "local.demo"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line:\n{done.stdout}\n--- stderr:\n{done.stderr[-3000:]}"
    result = json.loads(lines[0])
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(result) == {"recipients", "sent", "failed", "in_doubt", "duplicates", "lost", "recovered_after_s"}
    assert result["recipients"] == 678
    assert result["duplicates"] == 0
    assert result["lost"] == 0
    assert result["sent"] + result["failed"] + result["in_doubt"] == 678
    ceiling = MAX_IN_FLIGHT_BY_STORE["dynalite"]  # the demo's stack
    assert result["in_doubt"] <= ceiling  # at most the killed batch's in-flight claims
    assert result["recovered_after_s"] is not None and result["recovered_after_s"] > 0
    # The story on stderr: the kill after 15 accepted sends, the takeover, the finish.
    killed = re.search(r"SIGKILL sender pid \d+ after (\d+) sends accepted", done.stderr)
    assert killed and 15 <= int(killed.group(1)) <= 15 + ceiling, done.stderr[-3000:]
    assert "takeover" in done.stderr and "completed" in done.stderr


def test_the_verdict_counts_at_the_provider():
    recipients = [
        {"key": "a", "status": "sent"},      # received once: fine
        {"key": "b", "status": "sent"},      # received twice: a duplicate
        {"key": "c", "status": "in_doubt"},  # never received, honestly in doubt: not lost
        {"key": "d", "status": "pending"},   # never received, still open: lost
        {"key": "e", "status": "sent"},      # never received but called sent: lost
        {"key": "f", "status": "failed"},    # refused by the provider: not lost
        {"key": "g", "status": "skipped"},   # opted out: not lost
    ]
    sends = [{"callback": "a"}, {"callback": "b"}, {"callback": "b"}, {"callback": "zz-other-campaign"}]
    assert verdict(recipients, sends) == {
        "recipients": 7, "sent": 3, "failed": 1, "in_doubt": 1, "duplicates": 1, "lost": 2,
    }
