"""The fake Graph API behaves like the parts of WhatsApp Cloud API the sender relies on."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from local.fakegraph import FakeGraph, FakeGraphProcess

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-token"
PHONE_NUMBER_ID = "106540352242922"
SECRET = "app-secret"


def payload(to: str = "919876543210", callback: str | None = "camp-1:r-1") -> dict:
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": "diwali_offer",
            "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Asha"}]}],
        },
    }
    if callback is not None:
        body["biz_opaque_callback_data"] = callback
    return body


def send(
    fake: FakeGraph, body, token: str | None = TOKEN, phone_number_id: str = PHONE_NUMBER_ID, session=None,
    endpoint: str = "messages",
):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{fake.url}/v23.0/{phone_number_id}/{endpoint}"
    poster = session or requests
    if isinstance(body, bytes):
        return poster.post(url, data=body, headers=headers, timeout=10)
    return poster.post(url, json=body, headers=headers, timeout=10)


def wait_until(condition, timeout: float = 5.0, what: str = "condition"):
    """Polls until `condition()` is truthy; the deadline only turns a hang into a clear failure."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)
    return result


def error_code(response: requests.Response) -> int:
    return response.json()["error"]["code"]


@pytest.fixture
def fake():
    with FakeGraph(token=TOKEN) as running:
        yield running


# --------------------------------------------------------------------------------------------- sends


def test_accepted_send_has_the_graph_shape_and_is_recorded(fake):
    response = send(fake, payload(to="919876543210", callback="camp-1:r-1"))

    assert response.status_code == 200
    body = response.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "919876543210", "wa_id": "919876543210"}]
    [message] = body["messages"]
    assert message["id"].startswith("wamid.") and len(message["id"]) <= 128
    assert message["message_status"] == "accepted"
    [record] = fake.sends()
    assert record["seq"] == 1
    assert record["to"] == "919876543210"
    assert record["callback"] == "camp-1:r-1"
    assert record["phone_number_id"] == PHONE_NUMBER_ID
    assert record["wamid"] == message["id"]
    assert isinstance(record["at"], float)


def test_wamids_are_unique(fake):
    wamids = {send(fake, payload(callback=f"c:{n}")).json()["messages"][0]["id"] for n in range(20)}
    assert len(wamids) == 20


def test_send_is_recorded_on_arrival_while_the_response_is_still_pending(fake):
    fake.configure(latency_ms=60_000)  # far longer than the test: only the release below ends the wait
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(send, fake, payload(callback="camp-1:held"))

        wait_until(lambda: fake.sends(), what="the send to be recorded")
        assert fake.stats()["in_flight"] == 1
        assert not pending.done()
        [record] = fake.sends()
        assert record["callback"] == "camp-1:held"

        fake.configure(latency_ms=0)  # a new latency applies to requests already waiting
        response = pending.result(timeout=10)
    assert response.status_code == 200
    assert response.json()["messages"][0]["id"] == record["wamid"]
    assert fake.stats()["in_flight"] == 0


def test_stopping_never_answers_pending_requests():
    fake = FakeGraph(latency_ms=60_000).start()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(send, fake, payload(), None)
        wait_until(lambda: fake.stats()["in_flight"] == 1, what="the request to arrive")
        fake.stop()
        with pytest.raises(requests.ConnectionError):
            pending.result(timeout=10)
    assert len(fake.sends()) == 1  # it was sent all the same


def test_restarts_on_the_same_port_keeping_its_records(fake):
    send(fake, payload(callback="before"))
    url = fake.url
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_fake/stats", timeout=5)

    fake.start()

    assert fake.url == url
    assert send(fake, payload(callback="after")).status_code == 200
    assert [record["callback"] for record in fake.sends()] == ["before", "after"]


# --------------------------------------------------------------------------------------------- errors


def test_over_the_rate_cap_gets_130429_and_is_not_recorded():
    frozen = [1000.0]  # a frozen clock puts the whole burst inside one window, whatever the machine's speed
    with FakeGraph(rate_cap_mps=5, clock=lambda: frozen[0]) as fake:
        responses = [send(fake, payload(callback=f"c:{n}"), token=None) for n in range(12)]

        throttled = [n for n, response in enumerate(responses) if response.status_code != 200]
        assert len(throttled) == 7
        assert all(error_code(responses[n]) == 130429 for n in throttled)
        assert all(responses[n].status_code == 400 for n in throttled)
        recorded = {record["callback"] for record in fake.sends()}
        assert recorded == {f"c:{n}" for n in range(5)}
        assert fake.stats()["by_code"] == {"130429": 7}

        # The cap is per phone number id, and the window slides.
        assert send(fake, payload(callback="other"), token=None, phone_number_id="999").status_code == 200
        frozen[0] += 1.0
        assert send(fake, payload(callback="next-second"), token=None).status_code == 200


def test_reject_numbers_answer_their_code_and_are_not_recorded(fake):
    fake.configure(reject_numbers={"+91 98765 00000": 131026})

    rejected = send(fake, payload(to="919876500000", callback="bad"))
    accepted = send(fake, payload(to="919876511111", callback="good"))

    assert rejected.status_code == 400
    assert error_code(rejected) == 131026
    error = rejected.json()["error"]
    assert error["message"].startswith("(#131026)")
    assert error["type"] == "OAuthException"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert error["fbtrace_id"]
    assert accepted.status_code == 200
    assert [record["callback"] for record in fake.sends()] == ["good"]
    [rejection] = fake.rejected()
    assert rejection["code"] == 131026 and rejection["callback"] == "bad"


def test_fatal_code_fails_every_request(fake):
    fake.configure(fatal_code=190)

    responses = [send(fake, payload(callback=f"c:{n}")) for n in range(3)]

    assert [response.status_code for response in responses] == [401, 401, 401]
    assert {error_code(response) for response in responses} == {190}
    assert fake.sends() == []
    assert fake.stats()["by_code"] == {"190": 3}


def test_fail_ratio_is_deterministic_with_a_seed():
    def outcomes(fake: FakeGraph) -> list[int]:
        return [send(fake, payload(callback=f"c:{n}"), token=None).status_code for n in range(30)]

    with FakeGraph(fail_ratio=0.5, fail_code=131000, seed=7) as fake:
        first = outcomes(fake)
        failed = first.count(500)
        assert set(first) == {200, 500}  # 131000 is a server error: HTTP 500
        assert fake.stats()["accepted"] == 30 - failed
        assert fake.stats()["by_code"] == {"131000": failed}
        assert all(record["code"] == 131000 for record in fake.rejected())

        fake.reset()
        assert outcomes(fake) == first
    with FakeGraph(fail_ratio=0.5, fail_code=131000, seed=7) as same_seed:
        assert outcomes(same_seed) == first


def test_wrong_or_missing_token_gets_401_with_code_190(fake):
    wrong = send(fake, payload(), token="not-the-token")
    missing = send(fake, payload(), token=None)

    for response in (wrong, missing):
        assert response.status_code == 401
        assert error_code(response) == 190
    assert fake.sends() == []
    assert fake.stats()["rejected"] == 2


def test_any_token_is_accepted_without_a_configured_one():
    with FakeGraph() as fake:
        assert send(fake, payload(), token=None).status_code == 200
        assert send(fake, payload(), token="whatever").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        {**payload(), "messaging_product": "sms"},
        {**payload(), "to": ""},
        {**payload(), "type": None},
        {**payload(), "template": {"name": "x"}},
        {**payload(), "biz_opaque_callback_data": 42},
    ],
)
def test_malformed_body_gets_400_with_code_100(fake, body):
    response = send(fake, body)

    assert response.status_code == 400
    assert error_code(response) == 100
    assert response.json()["error"]["error_data"]["details"]
    assert fake.sends() == []


# --------------------------------------------------------------------------------------------- webhooks


class WebhookReceiver:
    """A tiny webhook endpoint that keeps every POST (raw body and headers)."""

    def __init__(self):
        self.posts: list[tuple[bytes, dict]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.posts.append((body, dict(self.headers)))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/webhook"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, dict]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.posts) >= count, timeout), "webhooks did not arrive"
            return list(self.posts)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    running = WebhookReceiver()
    yield running
    running.close()


def statuses_of(posts) -> list[dict]:
    return [json.loads(body)["entry"][0]["changes"][0]["value"]["statuses"][0] for body, _ in posts]


def test_status_webhooks_are_signed_ordered_and_echo_the_callback(fake, receiver):
    fake.configure(webhook_url=receiver.url, app_secret=SECRET, webhook_delay_ms=1)

    wamid = send(fake, payload(to="919876543210", callback="camp-1:r-7")).json()["messages"][0]["id"]
    posts = receiver.wait_for(3)

    for body, headers in posts:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Hub-Signature-256"], expected)
        document = json.loads(body)
        assert document["object"] == "whatsapp_business_account"
        change = document["entry"][0]["changes"][0]
        assert change["field"] == "messages"
        assert change["value"]["metadata"]["phone_number_id"] == PHONE_NUMBER_ID
    statuses = statuses_of(posts)
    assert [status["status"] for status in statuses] == ["sent", "delivered", "read"]
    for status in statuses:
        assert status["id"] == wamid
        assert status["recipient_id"] == "919876543210"
        assert status["biz_opaque_callback_data"] == "camp-1:r-7"
        assert status["timestamp"].isdigit()
        assert "errors" not in status
    wait_until(lambda: fake.stats()["webhooks_posted"] == 3, what="the posts to be counted")


def test_failed_webhooks_carry_131026_after_sent(fake, receiver):
    fake.configure(webhook_url=receiver.url, app_secret=SECRET, webhook_failed_ratio=1.0, webhook_delay_ms=1)

    send(fake, payload(callback="camp-1:r-8"))
    statuses = statuses_of(receiver.wait_for(2))

    assert [status["status"] for status in statuses] == ["sent", "failed"]
    [error] = statuses[1]["errors"]
    assert error["code"] == 131026
    assert statuses[1]["biz_opaque_callback_data"] == "camp-1:r-8"


# --------------------------------------------------------------------------------------------- marketing messages


def test_the_marketing_messages_endpoint_behaves_as_messages_and_each_record_names_its_endpoint(fake, receiver):
    fake.configure(webhook_url=receiver.url, app_secret=SECRET, webhook_delay_ms=1,
                   reject_numbers={"919800000009": 131026})
    marketing = send(fake, payload(to="919876543210", callback="camp-1:r-1"), endpoint="marketing_messages")
    plain = send(fake, payload(to="919876543211", callback="camp-1:r-2"))
    refused = send(fake, payload(to="919800000009", callback="camp-1:r-3"), endpoint="marketing_messages")
    unauthorised = send(fake, payload(), token="wrong", endpoint="marketing_messages")

    assert marketing.status_code == 200 and marketing.json()["messages"][0]["message_status"] == "accepted"
    assert plain.status_code == 200
    assert (refused.status_code, error_code(refused)) == (400, 131026)
    assert (unauthorised.status_code, error_code(unauthorised)) == (401, 190)
    assert [(r["to"], r["endpoint"]) for r in fake.sends()] == [("919876543210", "marketing_messages"),
                                                                ("919876543211", "messages")]
    assert [(r["code"], r["endpoint"]) for r in fake.rejected()] == [(131026, "marketing_messages"),
                                                                     (190, "marketing_messages")]
    statuses = statuses_of(receiver.wait_for(6))  # the same webhooks: sent, delivered, read of each
    assert sorted(s["biz_opaque_callback_data"] for s in statuses) == ["camp-1:r-1"] * 3 + ["camp-1:r-2"] * 3
    assert send(fake, payload(), endpoint="marketing_messages/extra").status_code == 404


# --------------------------------------------------------------------------------------------- stats and control


def test_duplicates_count_repeated_callbacks_or_numbers(fake):
    send(fake, payload(callback="camp-1:r-1"))
    send(fake, payload(callback="camp-1:r-1"))
    send(fake, payload(callback="camp-1:r-1"))
    send(fake, payload(callback="camp-1:r-2"))
    send(fake, payload(to="447700900001", callback=None))
    send(fake, payload(to="447700900001", callback=None))

    stats = fake.stats()
    assert stats["accepted"] == 6
    assert stats["duplicates"] == 3  # sends whose callback (or number) had been sent before
    assert stats["duplicate_keys"] == 2  # callbacks (or numbers) sent more than once


def test_reset_clears_records_and_stats(fake):
    send(fake, payload(callback="a"))
    send(fake, payload(callback="a"))
    send(fake, payload(), token="wrong")

    fake.reset()

    assert fake.sends() == []
    assert fake.rejected() == []
    stats = fake.stats()
    assert (stats["accepted"], stats["rejected"], stats["by_code"], stats["duplicates"]) == (0, 0, {}, 0)
    send(fake, payload(callback="a"))
    assert fake.sends()[0]["seq"] == 1
    assert fake.stats()["duplicates"] == 0


def test_control_endpoints_over_http(fake):
    control = requests.Session()
    config = control.post(f"{fake.url}/_fake/config", json={"reject_numbers": {"15550000001": 131050}}).json()
    assert config["reject_numbers"] == {"15550000001": 131050}
    assert config["token"] == TOKEN  # a partial update keeps the rest

    send(fake, payload(to="15550000001", callback="x"))
    send(fake, payload(to="15550000002", callback="y"))

    assert [record["callback"] for record in control.get(f"{fake.url}/_fake/sends").json()] == ["y"]
    assert control.get(f"{fake.url}/_fake/sends", params={"since": 1}).json() == []
    assert control.get(f"{fake.url}/_fake/rejected").json()[0]["code"] == 131050
    stats = control.get(f"{fake.url}/_fake/stats").json()
    assert (stats["accepted"], stats["rejected"], stats["by_code"]) == (1, 1, {"131050": 1})
    assert control.get(f"{fake.url}/_fake/config").json()["reject_numbers"] == {"15550000001": 131050}

    assert control.post(f"{fake.url}/_fake/reset").status_code == 200
    assert control.get(f"{fake.url}/_fake/stats").json()["accepted"] == 0

    bad = control.post(f"{fake.url}/_fake/config", json={"no_such_setting": 1})
    assert bad.status_code == 400 and "no_such_setting" in bad.json()["error"]["error_data"]["details"]
    assert control.post(f"{fake.url}/_fake/config", json={"fail_ratio": 2}).status_code == 400


def test_the_fake_in_its_own_process_answers_to_the_same_methods():
    with FakeGraphProcess(nice=5, token=TOKEN, latency_ms=5, reject_numbers={"15550000001": 131050}) as fake:
        assert os.getpriority(os.PRIO_PROCESS, fake.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 5
        assert fake.config()["token"] == TOKEN  # set after the start, not on a command line
        assert fake.config()["latency_ms"] == 5
        assert send(fake, payload(to="15550000002", callback="a")).status_code == 200
        assert send(fake, payload(to="15550000001", callback="b")).json()["error"]["code"] == 131050
        assert send(fake, payload(), token="wrong").status_code == 401
        assert [record["callback"] for record in fake.sends()] == ["a"]
        assert [record["code"] for record in fake.rejected()] == [131050, 190]
        fake.configure(reject_numbers={})
        assert send(fake, payload(to="15550000001", callback="c")).status_code == 200
        assert fake.stats()["accepted"] == 2
        fake.reset()
        assert fake.stats()["accepted"] == 0
        with pytest.raises(ValueError, match="no_such_setting"):
            fake.configure(no_such_setting=1)
        pid = fake.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped, and reaped


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="latency_ms"):
        FakeGraph(latency_ms=-1)
    with pytest.raises(ValueError, match="unknown"):
        FakeGraph(latency=5)
    with pytest.raises(ValueError, match="loopback"):
        FakeGraph(host="0.0.0.0")


def test_connections_are_kept_alive(fake):
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    body = json.dumps(payload()).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    local_ends = []
    for _ in range(3):
        connection.request("POST", f"/v23.0/{PHONE_NUMBER_ID}/messages", body=body, headers=headers)
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.getheader("Content-Length")) == len(response.read())
        local_ends.append(connection.sock.getsockname())
    connection.close()
    assert len(set(local_ends)) == 1


def test_concurrent_sends_are_all_recorded_once(fake):
    def burst(worker: int) -> list[int]:
        with requests.Session() as session:
            return [
                send(fake, payload(callback=f"w{worker}:{n}"), session=session).status_code for n in range(25)
            ]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = [status for result in pool.map(burst, range(16)) for status in result]

    assert statuses == [200] * 400
    records = fake.sends()
    assert sorted(record["seq"] for record in records) == list(range(1, 401))
    assert len({record["wamid"] for record in records}) == 400
    assert fake.stats()["duplicates"] == 0
    assert fake.stats()["in_flight"] == 0


# --------------------------------------------------------------------------------------------- command line


def test_command_line_serves_and_stops_on_sigterm():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.fakegraph",
            "--port",
            "0",
            "--token",
            TOKEN,
            "--reject",
            "15550000001=131026",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(f"{url}/_fake/config", timeout=5).json()["reject_numbers"] == {
            "15550000001": 131026
        }
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_command_line_reports_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = subprocess.run(
            [sys.executable, "-m", "local.fakegraph", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert finished.returncode == 2
    assert finished.stderr.strip().count("\n") == 0
    assert "in use" in finished.stderr
