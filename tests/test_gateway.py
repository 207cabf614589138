"""The local gateway: HTTP → API Gateway REST proxy events (the API's routes) or function URL events
(any other path, for the function with a URL) → the very handlers, and back; and the local stack
driven through it over real HTTP (pause/resume mid-send, the fake's signed status webhooks,
senders SIGKILLed at random points found through GET /_local/invocations)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import requests

from campaigns import views
from local.gateway import (
    Gateway,
    GatewayError,
    Handler,
    route,
    routes_from_template,
    url_functions_from_template,
)
from local.stack import FUNCTION_NAMES, StackConfig
from local.template import load_template
from local.up import describe
from tests.helpers import audit, wait_until

TEMPLATE = {"name": "diwali_offer", "language": "en_US",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}]}]}


# -- the adapter, on a handler of our own -------------------------------------------------------------

ECHO = textwrap.dedent('''
    import base64, json

    def handler(event, context):
        path = event.get("path") or event["rawPath"]  # a REST event's, or a function URL event's
        if path.endswith("/boom"):
            raise RuntimeError("boom")
        if path.endswith("/malformed"):
            return {"body": "no status code"}
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json", "X-Single": "one"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},  # API Gateway's
            "cookies": ["c=3"],  # a function URL's
            "body": base64.b64encode(json.dumps({"event": event, "remaining_ms": context.get_remaining_time_in_millis(),
                                                  "module": __name__}).encode()).decode(),
            "isBase64Encoded": True,
        }
''')


@pytest.fixture
def echo_gateway(tmp_path):
    path = tmp_path / "app.py"
    path.write_text(ECHO)
    routes = [route("GET", "/things/{id}", "echo"), route("POST", "/things/{id}", "echo"),
              route("GET", "/things/{id}/boom", "echo"), route("GET", "/things/{id}/malformed", "echo"),
              route("POST", "/webhook", "hook")]
    handlers = {"echo": Handler("echo", path, "handler", timeout_seconds=7),
                "hook": Handler("hook", path, "handler")}
    with Gateway(port=0, handlers=handlers, routes=routes, stage="dev", dashboard=False) as gateway:
        yield gateway


@pytest.fixture
def url_gateway(tmp_path):
    """The API's routes, and a function with a URL for every other path (as template.yaml's webhook)."""
    path = tmp_path / "app.py"
    path.write_text(ECHO)
    handlers = {"echo": Handler("echo", path, "handler"), "hook": Handler("hook", path, "handler", timeout_seconds=5)}
    with Gateway(port=0, handlers=handlers, routes=[route("GET", "/things/{id}", "echo")], url_functions=("hook",),
                 stage="dev", dashboard=False) as gateway:
        yield gateway


def test_a_request_becomes_a_rest_proxy_event_and_the_answer_an_http_response(echo_gateway):
    response = requests.post(
        f"{echo_gateway.url}/things/a%20b?x=1&x=2&flag",
        data="héllo".encode(), headers={"Content-Type": "text/plain; charset=utf-8", "X-Repeat": "r1"},
        timeout=10,
    )
    assert response.status_code == 201
    assert response.headers["X-Single"] == "one"
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert response.headers["x-amzn-RequestId"]
    answer = response.json()  # the handler's base64 body, decoded
    event = answer["event"]
    assert event["resource"] == "/things/{id}"
    assert event["path"] == "/things/a%20b"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"id": "a b"}
    assert event["queryStringParameters"] == {"x": "2", "flag": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "flag": [""]}
    assert event["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert event["multiValueHeaders"]["X-Repeat"] == ["r1"]
    assert event["body"] == "héllo" and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["stage"] == "dev" and context["path"] == "/dev/things/a%20b"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"] == response.headers["x-amzn-RequestId"]
    assert context["resourcePath"] == "/things/{id}" and context["httpMethod"] == "POST"
    assert 0 < answer["remaining_ms"] <= 7000  # the function's own timeout


def test_empty_body_is_null_and_headers_repeat_in_multi_value_headers(echo_gateway):
    with socket.create_connection(("127.0.0.1", echo_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /things/1 HTTP/1.1\r\nHost: x\r\nX-Dup: a\r\nX-Dup: b\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201")
    event = json.loads(body)["event"]  # the gateway decoded the handler's base64 body
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["multiValueHeaders"]["X-Dup"] == ["a", "b"]
    assert event["headers"]["X-Dup"] == "b"
    assert event["queryStringParameters"] is None and event["pathParameters"] == {"id": "1"}


def test_handler_failures_and_unknown_routes_answer_like_api_gateway(echo_gateway):
    boom = requests.get(f"{echo_gateway.url}/things/1/boom", timeout=10)
    assert boom.status_code == 502 and boom.json() == {"message": "Internal server error"}
    malformed = requests.get(f"{echo_gateway.url}/things/1/malformed", timeout=10)
    assert malformed.status_code == 502
    unknown = requests.get(f"{echo_gateway.url}/nothing/here", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    wrong_method = requests.delete(f"{echo_gateway.url}/things/1", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "GET, POST"
    assert requests.get(f"{echo_gateway.url}/_local/invocations", timeout=10).status_code == 404  # no runtime


def test_other_paths_go_to_the_function_url_as_payload_2_events(url_gateway):
    url = url_gateway.url
    response = requests.post(f"{url}/webhook?x=1&x=2&flag", data=b'{"a": 1}', timeout=10, headers={
        "Content-Type": "application/json", "X-Repeat": "r1", "Cookie": "k=v; l=w", "User-Agent": "facebookplatform"})
    assert response.status_code == 201 and response.headers["X-Single"] == "one"
    assert response.raw.headers.getlist("Set-Cookie") == ["c=3"]  # the answer's cookies, not multiValueHeaders
    answer = response.json()
    event = answer["event"]
    assert (event["version"], event["routeKey"], event["rawPath"]) == ("2.0", "$default", "/webhook")
    assert event["rawQueryString"] == "x=1&x=2&flag"
    assert event["queryStringParameters"] == {"x": "1,2", "flag": ""}
    assert event["headers"]["content-type"] == "application/json" and event["headers"]["x-repeat"] == "r1"
    assert all(name == name.lower() for name in event["headers"])
    assert "cookie" not in event["headers"] and event["cookies"] == ["k=v", "l=w"]
    assert {"resource", "httpMethod", "multiValueHeaders", "pathParameters"}.isdisjoint(event)
    context = event["requestContext"]
    assert context["http"] == {"method": "POST", "path": "/webhook", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                               "userAgent": "facebookplatform"}
    assert context["stage"] == "$default" and context["accountId"] == "anonymous"
    assert context["requestId"] == response.headers["x-amzn-RequestId"]
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False
    assert 0 < answer["remaining_ms"] <= 5000  # the URL function's own timeout
    # Any path and method: the function answers what it does not know. A binary body arrives in base64.
    binary = requests.put(f"{url}/any/thing", data=b"\xff\x00", timeout=10,
                          headers={"Content-Type": "application/octet-stream"})
    event = binary.json()["event"]
    assert event["requestContext"]["http"]["method"] == "PUT" and event["rawPath"] == "/any/thing"
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\xff\x00"
    bare = requests.get(f"{url}/", timeout=10).json()["event"]
    assert "body" not in bare and "queryStringParameters" not in bare and bare["rawQueryString"] == ""
    # The API's routes stay the API's: a REST event there, and 405 for a method the path does not have.
    assert requests.get(f"{url}/things/1", timeout=10).json()["event"]["resource"] == "/things/{id}"
    assert requests.delete(f"{url}/things/1", timeout=10).status_code == 405
    boom = requests.get(f"{url}/hook/boom", timeout=10)
    assert boom.status_code == 502


def test_a_function_url_answer_without_a_status_code_is_a_json_200(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text("def handler(event, context):\n    return {'hello': event['rawPath']}\n")
    handlers = {"plain": Handler("plain", path, "handler")}
    with Gateway(port=0, handlers=handlers, routes=[], url_functions=("plain",), dashboard=False) as gateway:
        response = requests.get(f"{gateway.url}/x", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json() == {"hello": "/x"}


def test_routes_and_handlers_come_from_the_template():
    names = {k: v for k, v in FUNCTION_NAMES.items() if v in ("api", "webhook")}
    template = load_template()
    routes = {(r.method, r.resource): r.function for r in routes_from_template(template, names)}
    assert routes[("POST", "/campaigns")] == "api"
    assert routes[("POST", "/campaigns/{id}/recipients")] == "api"
    assert routes[("GET", "/openapi.json")] == "api"
    assert set(routes.values()) == {"api"}  # the webhook is no route of the API ...
    assert url_functions_from_template(template, names) == ("webhook",)  # ... but the function with a URL
    gateway = Gateway(port=0, dashboard=False)
    matched, parameters, _ = gateway.find_route("POST", "/campaigns/abc/send")
    assert (matched.resource, parameters) == ("/campaigns/{id}/send", {"id": "abc"})
    assert gateway.find_route("POST", "/webhook") == (None, None, [])
    assert gateway.url_function == "webhook"
    assert gateway.stage == "dev"
    with pytest.raises(GatewayError, match="serves one"):
        Gateway(port=0, dashboard=False, handlers={}, routes=[], url_functions=("a", "b"))


def test_a_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(GatewayError) as raised:
            Gateway(port=port, dashboard=False).start()
        assert f"port {port}" in str(raised.value) and "in use" in str(raised.value)
        assert "\n" not in str(raised.value)
        # `make up` says it in one line on stderr and exits non-zero, before starting anything.
        env = {**os.environ, "API_PORT": str(port)}
        up = subprocess.run([sys.executable, "-m", "local.up"], env=env, capture_output=True, text=True, timeout=60)
        assert up.returncode == 2
        assert up.stderr.strip().count("\n") == 0 and f"port {port}" in up.stderr and "API_PORT" in up.stderr


# -- the local stack through HTTP ------------------------------------------------------------------------


@pytest.fixture
def api_stack(make_stack):
    def make(**overrides):
        stack = make_stack(api_port=0, **overrides)
        stack.start_gateway(dashboard=False)
        return stack

    return make


def create_campaign(url: str, recipients: int, rate: int = 80) -> str:
    created = requests.post(f"{url}/campaigns", timeout=30, json={
        "name": "gateway test", "phone_number_id": "1234567890", "template": TEMPLATE, "rate": rate})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    rows = [{"phone": f"+9198{n:08d}", "variables": [f"n{n}"]} for n in range(recipients)]
    imported = requests.post(f"{url}/campaigns/{campaign_id}/recipients", json={"recipients": rows}, timeout=60)
    assert imported.status_code == 200 and imported.json()["accepted"] == recipients, imported.text
    return campaign_id


def get(url: str, path: str):
    response = requests.get(url + path, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def post(url: str, path: str):
    response = requests.post(url + path, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def live_senders(url: str) -> list[dict]:
    return [i for i in get(url, "/_local/invocations") if i["function"] == "sender" and i["pid"]]


def test_local_invocations_show_the_live_sender_with_its_pid_and_deadline(api_stack):
    stack = api_stack(fake_latency_ms=30, batch_seconds=40)
    url = stack.gateway.url
    campaign_id = create_campaign(url, 100)
    post(url, f"/campaigns/{campaign_id}/send")
    senders = wait_until(lambda: live_senders(url), 30, "a live sender")
    sender = senders[0]
    assert set(sender) == {"id", "function", "pid", "started_at", "deadline"}
    assert sender["deadline"] == pytest.approx(sender["started_at"] + 40, abs=0.01)
    os.kill(sender["pid"], 0)  # a real process
    wait_until(lambda: get(url, f"/campaigns/{campaign_id}")["status"] == "completed", 60, "completion")


def test_pause_and_resume_mid_send_through_http(api_stack):
    stack = api_stack(fake_latency_ms=20, fake_webhook_failed_ratio=0.0)
    url = stack.gateway.url
    campaign_id = create_campaign(url, 200, rate=40)
    assert post(url, f"/campaigns/{campaign_id}/send")["status"] == "sending"
    wait_until(lambda: stack.fake.stats()["accepted"] >= 20, 60, "some sends")
    paused = post(url, f"/campaigns/{campaign_id}/pause")
    assert paused["status"] == "paused"
    # The batch stops at its next heartbeat; then nothing sends until resume.
    wait_until(lambda: not live_senders(url), 60, "the sender to stop")
    held = stack.fake.stats()["accepted"]
    status = get(url, f"/campaigns/{campaign_id}")
    assert status["status"] == "paused" and status["counts"]["pending"] > 0
    assert held < 200
    conflict = requests.post(f"{url}/campaigns/{campaign_id}/pause", timeout=30)
    assert conflict.status_code == 409 and conflict.json()["error"]["current_status"] == "paused"
    assert stack.fake.stats()["accepted"] == held
    assert post(url, f"/campaigns/{campaign_id}/resume")["status"] == "sending"
    wait_until(lambda: get(url, f"/campaigns/{campaign_id}")["status"] == "completed", 90, "completion")
    result = audit(views.get_campaign(campaign_id), stack.fake)
    assert result["lost"] == 0 and result["duplicates"] == {}
    assert result["statuses"]["sent"] + result["in_doubt"] == 200
    assert stack.fake.stats()["accepted"] > held


def test_status_webhooks_from_the_fake_round_trip_through_the_webhook_route(api_stack):
    stack = api_stack(fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    url = stack.gateway.url
    campaign_id = create_campaign(url, 20)
    post(url, f"/campaigns/{campaign_id}/send")

    def counts():
        return get(url, f"/campaigns/{campaign_id}")["counts"]

    final = wait_until(lambda: (c := counts())["delivered"] == 20 and c["read"] == 20 and c, 90,
                       "delivered and read for every recipient")
    assert final["sent"] == 20
    assert stack.fake.stats()["webhooks_posted"] >= 60  # sent, delivered, read for each
    assert stack.fake.stats()["webhooks_failed"] == 0
    # The route checks Meta's signature: a forged body changes nothing.
    body = json.dumps({"entry": []}).encode()
    forged = requests.post(f"{url}/webhook", data=body, timeout=10,
                           headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert forged.status_code == 403
    signature = "sha256=" + hmac.new(stack.secret["app_secret"].encode(), body, hashlib.sha256).hexdigest()
    signed = requests.post(f"{url}/webhook", data=body, timeout=10,
                           headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert signed.status_code == 200
    challenge = requests.get(f"{url}/webhook", timeout=10, params={
        "hub.mode": "subscribe", "hub.verify_token": stack.secret["verify_token"], "hub.challenge": "42"})
    assert (challenge.status_code, challenge.text) == (200, "42")
    # The webhook's URL takes any path, as deployed; its handler knows /webhook only.
    elsewhere = requests.post(f"{url}/", data=body, timeout=10,
                              headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "not_found"


def _signed(body: bytes, app_secret: str) -> dict:
    return {"Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()}


def test_the_stack_verifies_webhooks_with_the_app_secret_and_verify_token_of_the_environment(api_stack, monkeypatch):
    """As with WHATSAPP_TOKEN: a real Meta app's webhooks, or any fake that signs them, pass the local
    stack's checks when its app secret and verify token are given in the environment."""
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "the-meta-apps-secret")
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", "the-apps-verify-token")
    config = StackConfig.from_env()
    stack = api_stack(whatsapp_app_secret=config.whatsapp_app_secret,
                      whatsapp_verify_token=config.whatsapp_verify_token)
    url = stack.gateway.url
    handshake = {"hub.mode": "subscribe", "hub.verify_token": "the-apps-verify-token", "hub.challenge": "1158201444"}
    answer = requests.get(f"{url}/webhook", params=handshake, timeout=10)
    assert (answer.status_code, answer.text) == (200, "1158201444")
    other_token = requests.get(f"{url}/webhook", params={**handshake, "hub.verify_token": "another"}, timeout=10)
    assert other_token.status_code == 403
    body = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    assert requests.post(f"{url}/webhook", data=body, headers=_signed(body, "the-meta-apps-secret"),
                         timeout=10).status_code == 200
    assert requests.post(f"{url}/webhook", data=body, headers=_signed(body, "another-apps-secret"),
                         timeout=10).status_code == 403
    assert "(app secret: WHATSAPP_APP_SECRET; verify token: WHATSAPP_VERIFY_TOKEN)" in "\n".join(describe(stack))


@pytest.mark.crash
def test_senders_killed_at_random_points_through_local_invocations(api_stack):
    rng = random.Random(7)
    stack = api_stack(fake_latency_ms=30, batch_seconds=60, fake_webhook_failed_ratio=0.0)
    url = stack.gateway.url
    campaign_id = create_campaign(url, 300, rate=160)  # two shards, two senders
    post(url, f"/campaigns/{campaign_id}/send")

    def done():
        return get(url, f"/campaigns/{campaign_id}")["status"] == "completed"

    kills = 0
    for _ in range(6):
        target = stack.fake.stats()["accepted"] + rng.randint(1, 25)
        wait_until(lambda target=target: stack.fake.stats()["accepted"] >= target or done(), 60, "sends to progress")
        senders = live_senders(url)
        if not senders:
            continue
        try:
            os.kill(rng.choice(senders)["pid"], signal.SIGKILL)
            kills += 1
        except ProcessLookupError:
            pass  # it finished between the listing and the kill
    wait_until(done, 120, "completion after the kills")
    result = audit(views.get_campaign(campaign_id), stack.fake)
    assert kills >= 4
    assert result["lost"] == 0, result
    assert result["duplicates"] == {}, result
    assert result["sent_not_received"] == [], result
    assert result["in_doubt"] <= kills * stack.max_in_flight, result
    assert result["statuses"]["sent"] + result["in_doubt"] == 300
