"""The status webhook, called in-process with Lambda function URL events (payload format 2.0, as its URL
passes Meta's requests on) against the local stack; and end to end, with the fake Graph API posting its
signed statuses through a small HTTP gateway."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from aws_lambda_powertools.utilities import parameters

from campaigns import ledger, service, views
from campaigns.config import settings
from campaigns.models import Recipient, Shard, Suppression, recipient_sk, shard_pk
from functions.webhook.app import lambda_handler
from local.lambda_process import LambdaContext
from tests.helpers import captured_logs, new_campaign, recipients, wait_until

# -- calling the webhook like its function URL does --------------------------------------------------------


def webhook_event(method: str, body: str | None = None, headers: dict | None = None, query: dict | None = None,
                  base64_encoded: bool = False, path: str = "/webhook") -> dict:
    """A function URL event: header names lower-cased, no multi-value fields, the stage `$default`."""
    event = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": urlencode(query or {}),
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "requestContext": {"accountId": "anonymous", "apiId": "urlid", "domainName": "urlid.lambda-url.us-east-1.on.aws",
                           "domainPrefix": "urlid", "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                                              "sourceIp": "173.252.127.117", "userAgent": "facebookplatform"},
                           "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
                           "time": "28/Nov/2026:18:00:00 +0000", "timeEpoch": 1796061600000},
        "isBase64Encoded": base64_encoded,
    }
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


def lambda_context() -> LambdaContext:
    return LambdaContext(
        aws_request_id=str(uuid.uuid4()), function_name="webhook", function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:webhook", memory_limit_in_mb="512",
        log_group_name="/aws/lambda/webhook", log_stream_name="local", deadline_ms=int(time.time() * 1000) + 10_000,
    )


def invoke(event: dict) -> tuple[int, str, dict]:
    result = lambda_handler(event, lambda_context())
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    headers.update({k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()})
    return result["statusCode"], result["body"], headers


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def status_event(rec: Recipient | None, status: str, wamid: str = "wamid.TEST1", code: int | None = None,
                 callback: str | None = "default", ts: int | None = None) -> dict:
    """One status as Meta sends it (graph-api.md, "Status webhook")."""
    event = {"id": wamid, "status": status, "timestamp": str(ts or int(time.time())),
             "recipient_id": rec.phone if rec else "919800000000"}
    if callback == "default":
        callback = rec.callback_key if rec else None
    if callback is not None:
        event["biz_opaque_callback_data"] = callback
    if code is not None:
        event["errors"] = [{"code": code, "title": "failed", "message": "failed",
                            "error_data": {"details": f"error {code}"}}]
    return event


def payload(*statuses: dict) -> bytes:
    body = {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000",
                                                      "phone_number_id": "1234567890"},
        "statuses": list(statuses)}}]}]}
    return json.dumps(body, separators=(",", ":")).encode()


# -- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
def stack(make_stack):
    parameters.clear_caches()  # each stack has its own secret
    return make_stack(with_scheduler=False)


@pytest.fixture
def post(stack):
    secret = stack.secret["app_secret"]

    def post(body: bytes, signature: str | None = "good", base64_encoded: bool = False) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if signature == "good":
            headers["X-Hub-Signature-256"] = sign(body, secret)
        elif signature is not None:
            headers["X-Hub-Signature-256"] = signature
        text = base64.b64encode(body).decode() if base64_encoded else body.decode()
        status, answer, _ = invoke(webhook_event("POST", text, headers, base64_encoded=base64_encoded))
        return status, json.loads(answer)

    return post


def recipient(campaign, index: int = 0) -> Recipient:
    shard, seq = index % int(campaign.shard_count), index // int(campaign.shard_count)
    return Recipient.get(shard_pk(campaign.id, shard), recipient_sk(seq), consistent_read=True)


def set_state(rec: Recipient, **attrs) -> Recipient:
    """Put a recipient into a state directly, as the sender or a takeover would have left it."""
    rec.update(actions=[getattr(Recipient, name).set(value) for name, value in attrs.items()])
    return Recipient.get(rec.PK, rec.SK, consistent_read=True)


def shard_counts(campaign, shard: int = 0) -> dict:
    item = Shard.get(*Shard.key(campaign.id, shard), consistent_read=True)
    return {name: int(getattr(item, name)) for name in ("sent", "failed", "in_doubt", "delivered", "read",
                                                         "webhook_moves")}


def is_suppressed(phone: str) -> bool:
    return Suppression.count(Suppression.key(phone)[0], consistent_read=True) > 0


def as_sent(rec: Recipient, wamid: str = "wamid.TEST1") -> Recipient:
    return set_state(rec, status="sent", wamid=wamid, sent_at=time.time())


# -- GET verification ----------------------------------------------------------------------------------------------


def test_verification_echoes_the_challenge(stack):
    query = {"hub.mode": "subscribe", "hub.verify_token": stack.secret["verify_token"], "hub.challenge": "1158201444"}
    status, body, headers = invoke(webhook_event("GET", query=query))
    assert (status, body) == (200, "1158201444")
    assert headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("query", [
    {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": "VERIFY", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.verify_token": "VERIFY"},
    {},
])
def test_verification_refuses_a_wrong_token(stack, query):
    query = {k: (stack.secret["verify_token"] if v == "VERIFY" else v) for k, v in query.items()}
    status, body, _ = invoke(webhook_event("GET", query=query))
    assert status == 403
    assert json.loads(body)["error"]["code"] == "forbidden"


# -- POST signatures -----------------------------------------------------------------------------------------------


def test_signed_status_is_applied(stack, post):
    campaign = new_campaign(2)
    rec = as_sent(recipient(campaign))
    status, answer = post(payload(status_event(rec, "delivered")))
    assert status == 200 and answer["statuses"] == 1 and answer["recorded"] == 1
    assert recipient(campaign).delivered_at is not None
    assert shard_counts(campaign)["delivered"] == 1


def test_base64_encoded_body_is_verified_on_its_bytes(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    status, _ = post(payload(status_event(rec, "delivered")), base64_encoded=True)
    assert status == 200 and recipient(campaign).delivered_at is not None


@pytest.mark.parametrize(("signature", "expected"), [(None, 401), ("", 401), ("sha256=" + "0" * 64, 403),
                                                     ("sha1=abc", 403), ("other-secret", 403)])
def test_unsigned_or_badly_signed_bodies_change_nothing(stack, post, signature, expected):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    body = payload(status_event(rec, "failed", code=131050))
    if signature == "other-secret":
        signature = sign(body, "not the app secret")
    status, answer = post(body, signature=signature)
    assert status == expected and answer["error"]["field"] == "X-Hub-Signature-256"
    assert recipient(campaign).status == "sent" and recipient(campaign).failed_at is None
    assert shard_counts(campaign)["failed"] == 0
    assert not is_suppressed(rec.phone)


def test_signature_is_over_the_exact_bytes(stack, post):
    """Re-serialising the JSON (other spacing) breaks the signature: it is checked on the raw body."""
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    body = payload(status_event(rec, "delivered"))
    respaced = json.dumps(json.loads(body)).encode()
    status, _ = post(respaced, signature=sign(body, stack.secret["app_secret"]))
    assert status == 403 and recipient(campaign).delivered_at is None


def test_malformed_json_with_a_good_signature_is_400(stack, post):
    status, answer = post(b"{not json")
    assert status == 400 and answer["error"]["code"] == "malformed_json"


# -- applying statuses ---------------------------------------------------------------------------------------------


def test_replayed_event_counts_once(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    body = payload(status_event(rec, "delivered", ts=1_700_000_000), status_event(rec, "read", ts=1_700_000_005))
    assert post(body)[0] == 200
    first = recipient(campaign)
    for _ in range(3):
        status, answer = post(body)
        assert status == 200 and answer["unchanged"] == 2
    again = recipient(campaign)
    assert (again.delivered_at, again.read_at) == (first.delivered_at, first.read_at) == (1_700_000_000, 1_700_000_005)
    assert shard_counts(campaign)["delivered"] == 1 and shard_counts(campaign)["read"] == 1


def test_read_before_delivered(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    assert post(payload(status_event(rec, "read", ts=1_700_000_010)))[0] == 200
    after_read = recipient(campaign)
    assert after_read.read_at == 1_700_000_010
    assert after_read.delivered_at == 1_700_000_010  # a read message was delivered
    assert post(payload(status_event(rec, "delivered", ts=1_700_000_005)))[0] == 200
    final = recipient(campaign)
    assert final.status == "sent" and final.read_at == 1_700_000_010 and final.delivered_at == 1_700_000_010
    counts = shard_counts(campaign)
    assert counts["delivered"] == 1 and counts["read"] == 1 and counts["webhook_moves"] == 0


def test_in_doubt_recipient_is_resolved_as_sent(stack, post):
    campaign = new_campaign(2)
    rec = set_state(recipient(campaign), status="in_doubt", claimed_by="dead-batch", in_doubt_at=time.time())
    Shard(*Shard.key(campaign.id, 0)).update(actions=[Shard.in_doubt.set(1)])
    status, answer = post(payload(status_event(rec, "sent", wamid="wamid.PROOF")))
    assert status == 200 and answer["resolved"] == 1
    resolved = recipient(campaign)
    assert resolved.status == "sent" and resolved.wamid == "wamid.PROOF" and resolved.sent_at is not None
    counts = shard_counts(campaign)
    assert (counts["in_doubt"], counts["sent"], counts["webhook_moves"]) == (0, 1, 1)
    # The later statuses of the same message, and replays, leave the resolution alone.
    post(payload(status_event(rec, "delivered", wamid="wamid.PROOF"), status_event(rec, "sent", wamid="wamid.PROOF")))
    counts = shard_counts(campaign)
    assert (counts["in_doubt"], counts["sent"], counts["delivered"], counts["webhook_moves"]) == (0, 1, 1, 1)
    # Policy `resend` cannot requeue it any more: it is no longer in doubt.
    assert not ledger.requeue_in_doubt(recipient(campaign), time.time() + 10_000)


def test_in_doubt_resolved_by_a_read_counts_delivered_and_read(stack, post):
    campaign = new_campaign(1)
    rec = set_state(recipient(campaign), status="in_doubt", claimed_by="dead", in_doubt_at=time.time())
    Shard(*Shard.key(campaign.id, 0)).update(actions=[Shard.in_doubt.set(1)])
    post(payload(status_event(rec, "read")))
    assert recipient(campaign).status == "sent"
    counts = shard_counts(campaign)
    assert (counts["in_doubt"], counts["sent"], counts["delivered"], counts["read"]) == (0, 1, 1, 1)


def test_status_for_a_recipient_still_sending_records_but_does_not_move_it(stack, post):
    campaign = new_campaign(1)
    rec = recipient(campaign)
    assert ledger.claim(rec, "live-batch", time.time())
    status, answer = post(payload(status_event(rec, "sent", wamid="wamid.EARLY"),
                                  status_event(rec, "delivered", wamid="wamid.EARLY")))
    assert status == 200 and answer["recorded"] == 2
    seen = recipient(campaign)
    assert seen.status == "sending" and seen.claimed_by == "live-batch"
    assert seen.wamid == "wamid.EARLY" and seen.delivered_at is not None
    assert shard_counts(campaign)["delivered"] == 1 and shard_counts(campaign)["sent"] == 0
    # The batch died: a takeover that finds the recorded wamid settles it as sent, not in doubt.
    assert ledger.settle_orphan(seen, time.time()).value == "sent"
    # Had the batch lived, its own checkpoint would have won just the same.
    other = recipient(new_campaign(1))
    assert ledger.claim(other, "live", time.time())
    post(payload(status_event(other, "sent", wamid="wamid.X")))
    assert ledger.mark_sent(recipient_by_key(other), "live", "wamid.X", time.time())


def recipient_by_key(rec: Recipient) -> Recipient:
    return Recipient.get(rec.PK, rec.SK, consistent_read=True)


def test_failed_after_delivered(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    Shard(*Shard.key(campaign.id, 0)).update(actions=[Shard.sent.set(1)])
    post(payload(status_event(rec, "delivered")))
    status, answer = post(payload(status_event(rec, "failed", code=131026)))
    assert status == 200 and answer["failed"] == 1
    failed = recipient(campaign)
    assert failed.status == "failed" and failed.error_code == 131026 and failed.failed_at is not None
    assert failed.error_message == "error 131026" and failed.delivered_at is not None
    counts = shard_counts(campaign)
    assert (counts["sent"], counts["failed"], counts["delivered"], counts["webhook_moves"]) == (0, 1, 1, 1)
    # Replayed: counted once.
    post(payload(status_event(rec, "failed", code=131026)))
    assert shard_counts(campaign)["failed"] == 1 and shard_counts(campaign)["webhook_moves"] == 1
    # A late `delivered` (another device) never moves it back.
    post(payload(status_event(rec, "delivered")))
    assert recipient(campaign).status == "failed"


def test_failed_in_doubt_recipient(stack, post):
    campaign = new_campaign(1)
    rec = set_state(recipient(campaign), status="in_doubt", claimed_by="dead", in_doubt_at=time.time())
    Shard(*Shard.key(campaign.id, 0)).update(actions=[Shard.in_doubt.set(1)])
    post(payload(status_event(rec, "failed", code=131026)))
    assert recipient(campaign).status == "failed"
    counts = shard_counts(campaign)
    assert (counts["in_doubt"], counts["failed"]) == (0, 1)


def test_131050_suppresses_the_number(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    post(payload(status_event(rec, "failed", code=131050)))
    assert recipient(campaign).status == "failed"
    suppressed = Suppression.get(*Suppression.key(rec.phone))
    assert suppressed.phone == rec.phone and "131050" in suppressed.reason
    # The next campaign's import drops the number.
    other = service.create_campaign(service.CampaignSpec(name="next", phone_number_id="1", template=campaign.template),
                                    settings())
    from campaigns import imports

    parsed = imports.parse_items([{"phone": "+" + rec.phone, "variables": ["x"]}], 1)
    report = service.import_recipients(other.id, parsed)
    assert report["suppressed"] == 1 and report["accepted"] == 0


def test_an_opt_out_reply_beside_statuses_is_applied_and_unsigned_changes_nothing(stack, post):
    """Meta batches changes: one body may carry statuses and inbound messages (value.messages[])."""
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    body = json.loads(payload(status_event(rec, "delivered")))
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"] = [{"profile": {"name": "Ravi"}, "wa_id": "919800000001"}]
    value["messages"] = [{"from": "919800000001", "id": "wamid.IN1", "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": "unsubscribe "}}]
    raw = json.dumps(body, separators=(",", ":")).encode()
    status, answer = post(raw, signature="sha256=" + "0" * 64)
    assert status == 403 and not is_suppressed("919800000001")
    status, answer = post(raw)
    assert status == 200 and answer == {"statuses": 1, "recorded": 1, "opt_outs": 1}
    assert is_suppressed("919800000001") and recipient(campaign).delivered_at is not None
    assert Suppression.get(*Suppression.key("919800000001")).reason == "opted out: replied UNSUBSCRIBE"


def test_other_failures_do_not_suppress(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    post(payload(status_event(rec, "failed", code=131026)))
    assert recipient(campaign).status == "failed" and not is_suppressed(rec.phone)


def test_statuses_of_unknown_recipients_are_ignored_and_counted(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    before = shard_counts(campaign)
    status, answer = post(payload(
        status_event(rec, "delivered", callback=None),
        status_event(rec, "delivered", callback="not-a-key"),
        status_event(rec, "delivered", callback=f"{campaign.id}:0:999"),
        status_event(rec, "delivered", callback="0123456789abcdef:0:0"),
        status_event(rec, "delivered", callback=f"{campaign.id}#X:0:0"),
        status_event(rec, "deleted"),
        "not an object",
    ))
    assert status == 200
    assert answer["statuses"] == 7 and answer["unknown"] == 5 and answer["ignored"] == 2
    assert shard_counts(campaign) == before and recipient(campaign).delivered_at is None
    # Nothing was created for the unknown campaign either.
    with pytest.raises(Shard.DoesNotExist):
        Shard.get(*Shard.key("0123456789abcdef", 0))
    with pytest.raises(Recipient.DoesNotExist):
        Recipient.get(shard_pk(campaign.id, 0), recipient_sk(999))


def test_bodies_without_statuses_are_fine(stack, post):
    for body in (b"{}", b"[]", b'{"entry": "x"}', payload()):
        status, answer = post(body)
        assert status == 200 and answer["statuses"] == 0


def test_phone_numbers_never_reach_the_logs(stack, post):
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    with captured_logs() as logs:
        post(payload(status_event(rec, "failed", code=131050), status_event(rec, "read", callback="unknown")))
        post(payload(status_event(rec, "read")), signature="sha256=00")
    logged = logs.getvalue()
    assert "number suppressed" in logged and "webhook refused" in logged
    assert rec.phone not in logged and rec.phone[3:] not in logged


def test_unknown_route_is_404(stack):
    status, body, _ = invoke(webhook_event("GET", path="/webhooks"))
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


@pytest.mark.parametrize(("method", "path"), [("POST", "/"), ("POST", "/webhooks"), ("POST", "/webhook/x"),
                                              ("POST", "/dev/webhook"), ("PUT", "/webhook"), ("PATCH", "/webhook")])
def test_a_signed_status_at_another_path_or_method_changes_nothing(stack, method, path):
    """The function URL passes every path and method on: the handler applies POST /webhook alone."""
    campaign = new_campaign(1)
    rec = as_sent(recipient(campaign))
    body = payload(status_event(rec, "failed", code=131050))
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, stack.secret["app_secret"])}
    status, answer, _ = invoke(webhook_event(method, body.decode(), headers, path=path))
    assert status == 404 and json.loads(answer)["error"]["code"] == "not_found"
    assert recipient(campaign).status == "sent" and shard_counts(campaign)["failed"] == 0
    assert not is_suppressed(rec.phone)


def test_the_sample_events_are_what_the_handler_takes(make_stack):
    """events/webhook-*.json, as `sam local invoke WebhookFunction -e` feeds them, signed with the test-only
    app secret: the handshake is answered, the status (of a campaign that does not exist) is counted
    unknown, the STOP reply suppresses its number."""
    parameters.clear_caches()
    make_stack(with_scheduler=False, whatsapp_app_secret="test-app-secret", whatsapp_verify_token="test-verify-token")

    def sample(name: str) -> dict:
        return json.loads((Path(__file__).resolve().parents[1] / "events" / f"{name}.json").read_text())

    assert invoke(sample("webhook-verify"))[:2] == (200, "1158201444")
    status, answer, _ = invoke(sample("webhook-status"))
    assert status == 200 and json.loads(answer)["statuses"] == 1
    status, answer, _ = invoke(sample("webhook-opt-out"))
    assert status == 200 and json.loads(answer)["opt_outs"] == 1 and is_suppressed("919876543210")
    forged = sample("webhook-status")
    forged["body"] = forged["body"].replace("delivered", "read")
    assert invoke(forged)[0] == 403


# -- end to end: the fake Graph API posts signed statuses while a campaign is sent ------------------------------------


class _Gateway(BaseHTTPRequestHandler):
    """POST/GET /webhook → the webhook function, as its function URL would call it."""

    def _handle(self, method: str):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        event = webhook_event(method, raw.decode() if raw else None, dict(self.headers.items()),
                              dict(parse_qsl(split.query)) or None)
        status, body, headers = invoke(event)
        self.send_response(status)
        self.send_header("Content-Type", headers.get("content-type", "application/json"))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self._handle("POST")

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhook"
    server.shutdown()
    server.server_close()


def test_end_to_end_counters_match_the_recipients(stack, gateway):
    """Statuses race the sender's checkpoints (5 ms apart), arrive concurrently and, when the local
    store is slow, are retried by the fake: the shard counters must still agree with the recipients."""
    stack.fake.configure(webhook_url=gateway, webhook_failed_ratio=0.25, webhook_delay_ms=5, seed=7)
    campaign = new_campaign(30, rate=160)
    service.send(campaign.id, settings())
    wait_until(lambda: views.get_campaign(campaign.id).status == "completed", timeout=120, what="completion")
    wait_until(lambda: stack.fake.stats()["webhooks_pending"] == 0, timeout=120, what="every webhook posted")

    recs = recipients(campaign)
    by_status = Counter(r.status for r in recs)
    assert by_status["sent"] + by_status["failed"] == 30 and by_status["in_doubt"] == 0
    assert by_status["failed"] > 0  # some `failed` statuses moved sent recipients
    assert all(r.wamid for r in recs)
    counts = views.campaign_status(campaign.id, settings())["counts"]
    assert counts["sent"] == by_status["sent"] and counts["failed"] == by_status["failed"]
    assert counts["delivered"] == sum(1 for r in recs if r.delivered_at is not None)
    assert counts["read"] == sum(1 for r in recs if r.read_at is not None)
    assert counts["read"] > 0
