"""campaignctl, the command line for people: against the local stack over HTTP, and its SigV4 signing
for the deployed API (checked on the prepared request: nothing is sent off this machine)."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import requests
from botocore.credentials import Credentials

from campaignctl.cli import main, progress_bar, read_csv, template_for
from campaignctl.client import Client, SigV4Auth, is_loopback, region_for
from tests.helpers import wait_until


@pytest.fixture
def api(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=10, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    return stack


def run(url: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--api-url", url, *argv], out=out)
    return code, out.getvalue()


def write_csv(tmp_path, rows: int, extra: str = "") -> str:
    path = tmp_path / "recipients.csv"
    path.write_text("phone,name,offer\n" + "".join(f"+91 98{n:08d},Name {n},{n}%\n" for n in range(rows)) + extra)
    return str(path)


def test_create_send_watch_list_through_the_api(api, tmp_path, capsys):
    url = api.gateway.url
    csv_path = write_csv(tmp_path, 30, extra="not-a-phone,x,y\n")
    code, out = run(url, "create", "--name", "Diwali", "--phone-number-id", "1234567890",
                    "--template-name", "diwali_offer", "--language", "en_US", "--csv", csv_path, "--rate", "40")
    assert code == 0, capsys.readouterr().err
    assert out.startswith("created campaign ")
    campaign_id = out.split()[2]
    assert "30 recipients imported" in out and "1 rejected" in out and "line 32" in out

    code, out = run(url, "--json", "status", campaign_id)
    status = json.loads(out)
    assert (status["status"], status["total"], status["rate"]) == ("draft", 30, 40)
    assert status["template"]["components"][0]["parameters"][1]["text"] == "{{2}}"  # two CSV columns

    code, out = run(url, "send", campaign_id)
    assert code == 0 and f"send: campaign {campaign_id} is sending" in out

    code, out = run(url, "status", campaign_id, "--watch", "--interval", "0.2")
    assert code == 0
    lines = out.splitlines()
    assert any("sending" in line for line in lines)  # progress lines while it ran
    assert f"{campaign_id}  Diwali  [completed]" in out
    assert "sent 30" in out and "30/30" in out
    moment = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
    assert re.search(f"created {moment} · started {moment} · completed {moment}", out), out

    code, out = run(url, "list")
    assert code == 0 and campaign_id in out and "completed" in out
    code, out = run(url, "recipients", campaign_id, "--limit", "2")
    assert code == 0 and out.count(" sent ") == 2 and "wamid.FAKE" in out

    code, _ = run(url, "pause", campaign_id)
    assert code == 1
    assert "409 conflict" in capsys.readouterr().err


def test_pause_resume_cancel(api, tmp_path):
    url = api.gateway.url
    api.fake.configure(latency_ms=200)  # slow enough to pause mid-send
    code, out = run(url, "--json", "create", "--name", "slow", "--phone-number-id", "1234567890",
                    "--template-name", "t", "--csv", write_csv(tmp_path, 60), "--rate", "5", "--send")
    assert code == 0
    campaign_id = json.loads(out)["campaign"]["id"]
    wait_until(lambda: api.fake.stats()["accepted"] >= 1, 30, "a first send")
    assert run(url, "pause", campaign_id)[0] == 0
    assert json.loads(run(url, "--json", "status", campaign_id)[1])["status"] == "paused"
    assert run(url, "resume", campaign_id)[0] == 0
    code, out = run(url, "cancel", campaign_id)
    assert code == 0 and "is cancelled" in out
    # Its history, one event a line: time, kind, who, cause; oldest first (--newest: the newest first).
    code, out = run(url, "events", campaign_id)
    lines = out.splitlines()
    assert code == 0 and [line.split()[1:3] for line in lines] == [
        ["started", "person"], ["paused", "person"], ["resumed", "person"], ["cancelled", "person"]]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00  paused       person   paused by request$",
                    lines[1]), lines[1]
    code, out = run(url, "events", campaign_id, "--newest", "--limit", "1")
    assert out.split()[1] == "cancelled" and "more: --next " in out
    assert [e["kind"] for e in json.loads(run(url, "--json", "events", campaign_id)[1])["items"]][-1] == "cancelled"
    code, out = run(url, "status", campaign_id)  # the status view ends with the latest event
    assert code == 0 and re.search(r"last event: \S+  cancelled +person +cancel requested$", out), out


def test_errors_are_one_line_with_an_exit_status(api, tmp_path, capsys):
    url = api.gateway.url
    assert run(url, "status", "nope")[0] == 1
    assert "404 not_found" in capsys.readouterr().err
    assert run("http://127.0.0.1:9", "list")[0] == 3  # nothing listens on the discard port
    assert "cannot reach the API" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("name,phone\nx,+919800000000\n")
    assert run(url, "create", "--name", "x", "--phone-number-id", "1", "--template-name", "t", "--csv", str(bad))[0] == 2
    assert "first column must be `phone`" in capsys.readouterr().err


def test_template_and_progress_helpers(tmp_path):
    raw, variables = read_csv(write_csv(tmp_path, 2))
    assert variables == 2 and raw.startswith(b"phone,")
    assert template_for("t", "en_US", 0) == {"name": "t", "language": "en_US", "components": []}
    body = template_for("t", "en_US", 3)["components"][0]
    assert [p["text"] for p in body["parameters"]] == ["{{1}}", "{{2}}", "{{3}}"]
    bar = progress_bar({"status": "sending", "total": 10, "counts": {"sent": 4, "failed": 1}, "current_rate": 8,
                        "pace": 79.2, "eta_seconds": 0})
    assert "50.0%" in bar and "5/10" in bar
    assert "achieved 8 msg/s · pace 79.2 msg/s · ETA 0s" in bar  # each figure by its name; an ETA of 0 shown
    idle = progress_bar({"status": "paused", "total": 10, "counts": {"sent": 4}, "current_rate": 0, "pace": 0,
                         "eta_seconds": None})
    assert "achieved 0 msg/s" in idle and "ETA" not in idle  # nothing being sent: no ETA


# -- the deployed API: SigV4 --------------------------------------------------------------------------


def test_loopback_is_not_signed_and_anything_else_is():
    assert is_loopback("http://127.0.0.1:3000") and is_loopback("http://localhost:3000")
    assert is_loopback("http://[::1]:3000") and is_loopback("http://127.1.2.3")
    assert not is_loopback("https://abc123.execute-api.eu-west-1.amazonaws.com/dev")
    assert Client("http://127.0.0.1:3000").session.auth is None
    deployed = Client("https://abc123.execute-api.eu-west-1.amazonaws.com/dev", region="eu-west-1",
                      credentials=Credentials("AKIDEXAMPLE", "secret", "token-1"))
    assert isinstance(deployed.session.auth, SigV4Auth)


def test_region_comes_from_the_flag_the_environment_or_the_url(monkeypatch):
    url = "https://abc123.execute-api.ap-south-1.amazonaws.com/prod"
    assert region_for(url, "eu-west-1") == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert region_for(url) == "us-west-2"
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert region_for(url) == "ap-south-1"


def test_requests_to_the_deployed_api_carry_a_sigv4_signature_for_execute_api():
    auth = SigV4Auth("eu-west-1", Credentials("AKIDEXAMPLE", "secret", "token-1"))
    body = json.dumps({"name": "x"})
    prepared = requests.Request("POST", "https://abc123.execute-api.eu-west-1.amazonaws.com/dev/campaigns",
                                data=body, headers={"Content-Type": "application/json",
                                                    "Idempotency-Key": "k1"}).prepare()
    signed = auth(prepared)
    authorization = signed.headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "SignedHeaders=content-type;host;idempotency-key;x-amz-date;x-amz-security-token" in authorization
    assert signed.headers["X-Amz-Security-Token"] == "token-1" and signed.headers["X-Amz-Date"]
    # The signature covers the body: another body, another signature.
    other = auth(requests.Request("POST", prepared.url, data=body + " ",
                                  headers={"Content-Type": "application/json", "Idempotency-Key": "k1"}).prepare())
    assert other.headers["Authorization"].split("Signature=")[1] != authorization.split("Signature=")[1]


def test_numbers_are_set_shown_and_listed(api):
    url = api.gateway.url
    assert run(url, "numbers")[1].strip() == "no number configured"
    code, out = run(url, "numbers", "5550001", "--set", "--throughput", "20", "--messaging-limit", "2000",
                    "--portfolio", "acme")
    assert code == 0
    assert "5550001: 20 msg/s (set), 0 given out to 0 shard(s)" in out
    assert "messaging limit of portfolio acme: 0 of 2000 users reached in 24 h, 2000 left" in out
    assert json.loads(run(url, "--json", "numbers", "5550001")[1])["throughput_mps"] == 20.0
    assert [n["phone_number_id"] for n in json.loads(run(url, "--json", "numbers")[1])] == ["5550001"]
    assert run(url, "numbers", "5550001", "--set", "--throughput", "0")[0] == 1  # the API's 422, one line


def test_suppressions_are_added_listed_shown_and_removed(api):
    url = api.gateway.url
    assert run(url, "suppressions", "list")[1].strip() == "no number suppressed"
    code, out = run(url, "suppressions", "add", "+91 98765 43210", "--reason", "asked by phone")
    assert code == 0 and "+919876543210" in out and "person" in out and "0 pending recipient(s) skipped" in out
    assert "suppressed by a person: asked by phone" in run(url, "suppressions", "list")[1]
    assert json.loads(run(url, "--json", "suppressions", "show", "919876543210")[1])["source"] == "person"
    code, out = run(url, "suppressions", "remove", "919876543210")
    assert code == 0 and "taken off the suppression list" in out
    assert run(url, "suppressions", "remove", "919876543210")[0] == 1  # the API's 404, one line
    assert run(url, "suppressions", "add", "12")[0] == 1  # 422: not a number


def test_export_follows_every_page_into_one_file_with_one_header(api, tmp_path, capsys):
    url = api.gateway.url
    api.fake.configure(reject_numbers={"919800000003": 131026})
    code, out = run(url, "--json", "create", "--name", "export", "--phone-number-id", "1234567890",
                    "--template-name", "t", "--csv", write_csv(tmp_path, 12), "--send")
    assert code == 0
    campaign_id = json.loads(out)["campaign"]["id"]
    wait_until(lambda: json.loads(run(url, "--json", "status", campaign_id)[1])["status"] == "completed", 60,
               "the campaign to complete")
    header = ["phone", "status", "error_code", "error_message", "sent_at", "delivered_at", "read_at"]

    target = tmp_path / "export.csv"
    code, out = run(url, "export", campaign_id, "-o", str(target), "--limit", "5")
    assert code == 0 and out.strip() == f"12 recipients written to {target} (3 pages)"
    raw = target.read_bytes()
    assert raw.startswith(b"phone,status,") and raw.count(b"\r\n") == 13  # CRLF records, kept as they came
    lines = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert lines[0] == header and header not in lines[1:] and len(lines) == 13
    assert sorted(line[0] for line in lines[1:]) == [f"9198{n:08d}" for n in range(12)]
    by_phone = {line[0]: line for line in lines[1:]}
    assert by_phone["919800000003"][1:3] == ["failed", "131026"]
    assert all(line[1] == "sent" and line[4] for phone, line in by_phone.items() if phone != "919800000003")
    assert not (tmp_path / "export.csv.part").exists()

    # To standard output, filtered; the summary on standard error then.
    capsys.readouterr()
    code, out = run(url, "export", campaign_id, "--status", "failed")
    assert code == 0
    assert list(csv.reader(io.StringIO(out, newline=""))) == [header, by_phone["919800000003"]]
    assert capsys.readouterr().err.strip() == "1 recipient (failed) written to stdout (1 page)"
    summary = json.loads(run(url, "--json", "export", campaign_id, "-o", str(target), "--limit", "7")[1])
    assert summary == {"campaign": campaign_id, "status": None, "rows": 12, "pages": 2, "file": str(target)}

    # A refusal is one line and leaves no file behind.
    missing = tmp_path / "none.csv"
    assert run(url, "export", "0123456789abcdef", "-o", str(missing))[0] == 1
    assert "404 not_found" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "none.csv.part").exists()


# -- test sends and clones (issue 21) ------------------------------------------------------------------


def test_a_test_send_from_the_command_line_reaches_the_fake_and_leaves_the_draft(api, tmp_path, capsys):
    url = api.gateway.url
    code, out = run(url, "--json", "create", "--name", "Diwali", "--phone-number-id", "1234567890",
                    "--template-name", "diwali_offer", "--csv", write_csv(tmp_path, 3), "--api", "marketing_messages")
    assert code == 0, capsys.readouterr().err
    campaign_id = json.loads(out)["campaign"]["id"]

    code, out = run(url, "test", campaign_id, "--phone", "+91 98765 00001", "--phone", "+919876500002",
                    "--var", "Asha", "--var", "5%")
    assert code == 0, capsys.readouterr().err
    assert out.count(" sent    wamid.FAKE") == 2 and "2 of 2 test send(s) accepted" in out
    assert sorted((s["to"], s["endpoint"]) for s in api.fake.sends()) == [
        ("919876500001", "marketing_messages"), ("919876500002", "marketing_messages")]
    status = json.loads(run(url, "--json", "status", campaign_id)[1])
    assert (status["status"], status["counts"]["sent"], status["counts"]["pending"]) == ("draft", 0, 3)

    numbers = tmp_path / "numbers.csv"
    numbers.write_text("phone,name,offer\n+919876500003,Ravi,10%\n")
    api.fake.configure(reject_numbers={"919876500003": 131026})
    code, out = run(url, "test", campaign_id, "--csv", str(numbers))
    assert code == 1 and "+919876500003" in out and "FAILED  131026 (recipient)" in out

    assert run(url, "test", campaign_id, "--phone", "12", "--var", "a", "--var", "b")[0] == 1  # the API's 422
    assert "recipients[0].phone" in capsys.readouterr().err
    assert run(url, "test", campaign_id)[0] == 2
    assert "--phone" in capsys.readouterr().err


def test_a_clone_from_the_command_line_is_a_draft_with_the_same_template(api, tmp_path, capsys):
    url = api.gateway.url
    code, out = run(url, "--json", "create", "--name", "Diwali", "--phone-number-id", "1234567890",
                    "--template-name", "diwali_offer", "--csv", write_csv(tmp_path, 4), "--rate", "40")
    source = json.loads(out)["campaign"]
    code, out = run(url, "clone", source["id"], "--name", "Diwali again", "--recipients", "not_delivered")
    assert code == 0, capsys.readouterr().err
    assert out.startswith(f"cloned campaign {source['id']} into ")
    clone_id = out.split()[4]
    assert "4 recipients imported (4 in the campaign)" in out and "[draft]" in out
    cloned = json.loads(run(url, "--json", "status", clone_id)[1])
    assert (cloned["name"], cloned["status"], cloned["rate"], cloned["total"]) == ("Diwali again", "draft", 40, 4)
    assert cloned["template"] == source["template"]
    code, out = run(url, "--json", "clone", source["id"])
    assert code == 0 and json.loads(out)["name"] == "Diwali (copy)" and json.loads(out)["total"] == 0
    assert run(url, "clone", "0123456789abcdef")[0] == 1
    assert "404 not_found" in capsys.readouterr().err
