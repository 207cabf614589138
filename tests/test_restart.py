"""`make up`, stopped with Ctrl-C while a campaign sends, then `make up` again: the campaign is still there
and sending goes on where it stopped (the recovery schedule takes the shard over from the batch the stop
killed), nothing lost, nothing sent twice. Each `make up` is `python -m local.up` as its own process, on
the same store folder (LOCAL_DATA_DIR); the Graph API fake lives outside both, so it counts every send."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from local.demo import TEMPLATE, Api, recipients_csv, verdict
from local.fakegraph import FakeGraph
from local.stack import MAX_IN_FLIGHT_BY_STORE
from local.storage import DynaliteServer, free_port
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
# What conftest points at the session's moto server; `make up` starts and configures its own stack.
INHERITED = ("AWS_", "POWERTOOLS_", "TABLE_NAME", "SENDER_FUNCTION_NAME", "WHATSAPP_SECRET_ARN", "GRAPH_API_URL",
             "API_PORT", "LEASE_SECONDS", "HEARTBEAT_SECONDS", "MAX_IN_FLIGHT", "PHONE_NUMBER_ID", "LOCAL_")

pytestmark = pytest.mark.skipif(DynaliteServer.missing() is not None, reason=str(DynaliteServer.missing()))


def make_up(env: dict) -> subprocess.Popen:
    """`make up` until it prints its table of what runs where."""
    up = subprocess.Popen([sys.executable, "-m", "local.up"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    for line in up.stdout:
        if line.startswith("CLI:"):
            return up
    up.wait(timeout=30)
    raise AssertionError(f"make up exited {up.returncode} before it was up")


def ctrl_c(up: subprocess.Popen) -> None:
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=60) == 0


@pytest.mark.crash
def test_a_restarted_make_up_keeps_its_campaigns_and_finishes_the_one_it_was_sending(tmp_path):
    token = secrets.token_urlsafe(16)
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    env.update({"API_PORT": str(api_port), "LOCAL_DATA_DIR": str(tmp_path / "store"), "WHATSAPP_TOKEN": token,
                "FUNCTION_LOG": str(tmp_path / "functions.log")})
    api = Api(f"http://127.0.0.1:{api_port}")
    with FakeGraph(token=token, latency_ms=20) as fake:
        env["GRAPH_API_URL"] = fake.url
        up = make_up(env)
        try:
            campaign_id = api.call("POST", "/campaigns", expect=201, json={
                "name": "restart", "phone_number_id": "1234567890", "rate": 80, "in_doubt_policy": "skip",
                "template": TEMPLATE})["id"]
            api.call("POST", f"/campaigns/{campaign_id}/recipients", data=recipients_csv(600).encode(),
                     headers={"Content-Type": "text/csv"})
            api.call("POST", f"/campaigns/{campaign_id}/send")
            wait_until(lambda: fake.stats()["accepted"] >= 100, 60, "sends before the stop")
        finally:
            ctrl_c(up)  # the stop kills the sender mid-batch, as any crash would
        sent_before = fake.stats()["accepted"]
        assert sent_before < 600, "the campaign finished before the stop: nothing left to resume"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{api.base_url}/campaigns", timeout=2)

        up = make_up(env)
        try:
            assert api.call("GET", f"/campaigns/{campaign_id}")["status"] == "sending"  # still there
            wait_until(lambda: api.call("GET", f"/campaigns/{campaign_id}")["status"] == "completed", 120,
                       "the campaign to complete after the restart")
            result = verdict(api.recipients(campaign_id), fake.sends())
        finally:
            ctrl_c(up)
    assert fake.stats()["accepted"] > sent_before  # the restarted stack sent the rest
    assert (result["recipients"], result["lost"], result["duplicates"]) == (600, 0, 0), result
    assert result["sent"] + result["in_doubt"] == 600, result
    assert result["in_doubt"] <= MAX_IN_FLIGHT_BY_STORE["dynalite"]  # what the stop caught in flight
