"""The incident replay end to end: `python -m local.demo` (what `make demo` runs) as its own process, with
its own stack. 678 recipients through the HTTP API, the sender SIGKILLed after 15 accepted sends, and
the verdict counted at the fake Graph API: completed, nothing lost, nothing sent twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from local.demo import verdict
from local.stack import MAX_IN_FLIGHT_BY_STORE

REPO = Path(__file__).resolve().parent.parent
# What conftest points at the session's moto server; the demo starts and configures its own stack.
INHERITED = ("AWS_", "POWERTOOLS_", "TABLE_NAME", "SENDER_FUNCTION_NAME", "WHATSAPP_SECRET_ARN", "GRAPH_API_URL",
             "API_PORT", "LEASE_SECONDS", "HEARTBEAT_SECONDS", "MAX_IN_FLIGHT", "PHONE_NUMBER_ID")


@pytest.mark.crash
def test_make_demo_replays_the_incident_and_loses_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    evidence_path = tmp_path / "evidence.json"
    done = subprocess.run([sys.executable, "-m", "local.demo", "--evidence", str(evidence_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=240)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line:\n{done.stdout}\n--- stderr:\n{done.stderr[-3000:]}"
    result = json.loads(lines[0])
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(result) == {"recipients", "sent", "failed", "in_doubt", "duplicates", "lost", "recovered_after_s"}

    # The demo's verdict, recounted here from the raw records rather than read from its narration.
    evidence = json.loads(evidence_path.read_text())
    recipients = {r["key"]: r["status"] for r in evidence["recipients"]}
    received = Counter(s["callback"] for s in evidence["sends"] if s["callback"] in recipients)
    assert len(recipients) == 678
    assert [k for k, n in received.items() if n > 1] == []
    assert [k for k, status in recipients.items() if status in ("pending", "sending")] == []
    assert [k for k, status in recipients.items() if status == "sent" and not received[k]] == []
    in_doubt = [k for k, status in recipients.items() if status == "in_doubt"]
    ceiling = MAX_IN_FLIGHT_BY_STORE["dynalite"]  # the demo's stack: the most a kill can leave in doubt
    assert len(in_doubt) <= ceiling and not any(received[k] for k in in_doubt)  # the killed batch's claims, never sent
    # The incident: one sender SIGKILLed (as the runtime saw it die) after 15 accepted sends, at most its
    # in-flight sends more, then a takeover by recovery acting on the on-failure record.
    kill = evidence["kill"]
    died = [h for h in evidence["invocations"] if h["pid"] == kill["pid"]]
    assert [(h["function"], h["outcome"]) for h in died] == [("sender", "killed")]
    before_kill = sum(1 for s in evidence["sends"] if s["at"] <= kill["at"])
    assert 15 <= before_kill <= 15 + ceiling
    takeovers = [h for h in evidence["invocations"] if h["function"] == "recovery"
                 and (h["result"] or {}).get("taken_over") and h["started_at"] > kill["at"]]
    assert takeovers, "recovery took the shard over after the kill"
    assert result == {**verdict(evidence["recipients"], evidence["sends"]),
                      "recovered_after_s": result["recovered_after_s"]}
    assert result["recovered_after_s"] is not None and result["recovered_after_s"] > 0


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
