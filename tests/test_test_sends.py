"""Test sends (POST /campaigns/{id}/test, campaigns/test_sends.py): the campaign's template sent now to a
few numbers through the fake Graph API, with the campaign, its recipients and its counts left as they were."""

from __future__ import annotations

import json
import time

import pytest
from aws_lambda_powertools.utilities import parameters
from pynamodb.exceptions import DoesNotExist

from campaigns import numbers, suppressions
from campaigns.models import Campaign, NumberProof
from local.fakegraph.wire import signature_header
from local.storage import create_secret
from tests.helpers import captured_logs, wait_until
from tests.test_api import assert_error, call, create, digits, phone, rows, stored, table_items
from tests.test_webhook import invoke, webhook_event


@pytest.fixture
def stack(make_stack):
    parameters.clear_caches()  # each stack has its own secret
    return make_stack(with_scheduler=False)


def sample(*numbers_: int) -> list[dict]:
    return [{"phone": phone(n), "variables": [f"test{n}", "5%"]} for n in numbers_]


def post_test(campaign_id: str, items: list) -> dict:
    return call("POST", f"/campaigns/{campaign_id}/test", {"recipients": items})


def unchanged_draft(campaign_id: str, total: int) -> None:
    """The campaign as its import left it: draft, every recipient pending and unsent, every count 0."""
    status = call("GET", f"/campaigns/{campaign_id}").body
    assert status["status"] == "draft" and status["total"] == total
    assert status["counts"] == {"pending": total, "sending": 0, "sent": 0, "delivered": 0, "read": 0, "failed": 0,
                                "in_doubt": 0, "skipped": 0, "expired": 0}
    assert all(r.status == "pending" and r.wamid is None and r.claimed_at is None and not r.attempts
               for r in stored(campaign_id))


def test_a_test_send_to_two_numbers_reaches_the_fake_and_leaves_the_draft_as_it_was(stack):
    campaign = create(recipients=rows(1, 2, 3))
    answer = call("POST", f"/campaigns/{campaign['id']}/test", {"recipients": sample(7, 8)})
    assert answer.status == 200, answer.body
    results = answer.body["results"]
    assert [r["phone"] for r in results] == [digits(7), digits(8)]
    assert all(r["ok"] and r["wamid"].startswith("wamid.") and "error" not in r for r in results)
    sends = stack.fake.sends()
    assert sorted(s["to"] for s in sends) == [digits(7), digits(8)]
    assert {s["wamid"] for s in sends} == {r["wamid"] for r in results}
    assert all(s["callback"].startswith(f"test:{campaign['id']}:") and s["endpoint"] == "messages" for s in sends)
    assert len({s["callback"] for s in sends}) == 2  # each its own: a second test of a number is no duplicate
    unchanged_draft(campaign["id"], 3)


def test_a_test_send_goes_from_the_campaigns_number_to_its_endpoint(stack):
    campaign = create(recipients=rows(1), api="marketing_messages", phone_number_id="5550001")
    assert post_test(campaign["id"], sample(7)).status == 200
    (sent,) = stack.fake.sends()
    assert (sent["phone_number_id"], sent["endpoint"]) == ("5550001", "marketing_messages")


@pytest.mark.parametrize("status", ["sending", "completed", "cancelled"])
def test_a_test_of_a_campaign_sending_or_finished_is_409_and_sends_nothing(stack, status):
    campaign = create(recipients=rows(1))
    if status == "cancelled":
        assert call("POST", f"/campaigns/{campaign['id']}/cancel").status == 200
    else:
        set_status(campaign["id"], status)  # no batch started: this is about the refusal only
    answer = post_test(campaign["id"], sample(8))
    assert_error(answer, 409, "conflict", "status")
    assert answer.error["current_status"] == status
    assert stack.fake.sends() == []


def test_a_paused_campaign_can_be_tested(stack):
    campaign = create(recipients=rows(1))
    set_status(campaign["id"], "paused")
    answer = post_test(campaign["id"], sample(7))
    assert answer.status == 200 and answer.body["results"][0]["ok"]
    assert call("GET", f"/campaigns/{campaign['id']}").body["status"] == "paused"


def set_status(campaign_id: str, status: str) -> None:
    Campaign(*Campaign.key(campaign_id)).update(actions=[Campaign.status.set(status)])


def test_a_scheduled_campaign_can_be_tested(stack):
    campaign = create(recipients=rows(1), send_at=int(time.time()) + 3600)
    assert campaign["status"] == "scheduled"
    answer = post_test(campaign["id"], sample(7))
    assert answer.status == 200 and answer.body["results"][0]["ok"]
    assert call("GET", f"/campaigns/{campaign['id']}").body["status"] == "scheduled"


BAD_TESTS = [
    ("an invalid number", lambda: [*sample(1), {"phone": "12345", "variables": ["a", "b"]}], "recipients[1].phone"),
    ("a wrong count of variables", lambda: [{"phone": phone(1), "variables": ["only one"]}],
     "recipients[0].variables"),
    ("a number twice", lambda: [*sample(1, 2), {"phone": digits(1), "variables": ["x", "y"]}],
     "recipients[2].phone"),
    ("more than 10", lambda: sample(*range(11)), "recipients"),
    ("none", lambda: [], "recipients"),
    ("an unknown field", lambda: [{"phone": phone(1), "variables": ["a", "b"], "name": "x"}], "recipients[0].name"),
]


@pytest.mark.parametrize(("why", "items", "field"), BAD_TESTS, ids=[b[0] for b in BAD_TESTS])
def test_a_bad_test_request_is_422_naming_the_field_and_sends_and_writes_nothing(stack, why, items, field):
    campaign = create(recipients=rows(1))
    before = table_items()
    answer = post_test(campaign["id"], items())
    assert_error(answer, 422, "validation_error", field)
    assert stack.fake.sends() == [] and stack.fake.rejected() == []
    assert table_items() == before


def test_a_test_of_an_unknown_campaign_is_404(stack):
    assert_error(post_test("0123456789abcdef", sample(1)), 404, "not_found", "id")
    assert stack.fake.sends() == []


def test_each_result_says_the_graph_error_and_its_class_and_a_fatal_one_pauses_nothing(stack):
    stack.fake.configure(reject_numbers={digits(7): 131026, digits(8): 132001})
    campaign = create(recipients=rows(1))
    results = post_test(campaign["id"], sample(6, 7, 8)).body["results"]
    assert results[0]["ok"] is True
    assert results[1] == {"phone": digits(7), "ok": False,
                          "error": {"code": 131026, "message": results[1]["error"]["message"], "class": "recipient"}}
    assert results[2]["error"]["code"] == 132001 and results[2]["error"]["class"] == "fatal"
    unchanged_draft(campaign["id"], 1)  # a fatal answer to a test pauses nothing: the campaign is not sending


def test_a_suppressed_number_is_not_sent_to_and_says_why(stack):
    suppressions.suppress(digits(7), suppressions.reply_reason("STOP"), suppressions.SOURCE_REPLY)
    campaign = create(recipients=rows(1))
    results = post_test(campaign["id"], sample(6, 7)).body["results"]
    assert results[0]["ok"] is True
    assert results[1]["ok"] is False and results[1]["error"]["class"] == "suppressed"
    assert results[1]["error"]["code"] is None and "suppression list" in results[1]["error"]["message"]
    assert [s["to"] for s in stack.fake.sends()] == [digits(6)]


def test_a_131050_answer_is_reported_and_suppresses_nothing(stack):
    stack.fake.configure(reject_numbers={digits(7): 131050})
    campaign = create(recipients=rows(7))  # the same number is also a recipient of the campaign
    (result,) = post_test(campaign["id"], sample(7)).body["results"]
    assert result["error"]["code"] == 131050 and result["error"]["class"] == "suppress"
    assert suppressions.find(digits(7)) is None
    unchanged_draft(campaign["id"], 1)


def test_an_unreachable_provider_is_an_error_result_not_a_500(stack):
    campaign = create(recipients=rows(1))
    stack.fake.stop()
    try:
        answer = post_test(campaign["id"], sample(7))
    finally:
        stack.fake.start()
    assert answer.status == 200
    (result,) = answer.body["results"]
    assert result["ok"] is False and result["error"]["class"] in ("retryable", "no_answer")
    unchanged_draft(campaign["id"], 1)


def test_a_number_of_another_account_is_tested_with_its_own_token(stack):
    name = f"{stack.config.table_name}/numbers/5550005"
    create_secret(stack.moto.url, {"access_token": "other-account-token"}, name=name)
    numbers.configure("5550005", 80, secret=name)
    stack.fake.configure(token="other-account-token")
    campaign = create(recipients=rows(1), phone_number_id="5550005")
    (result,) = post_test(campaign["id"], sample(7)).body["results"]
    assert result["ok"] is True, result


def test_the_status_webhooks_of_a_test_send_change_nothing(make_stack):
    """The fake posts the sent, delivered and read statuses of each test send to the webhook, through the
    gateway, as Meta would: they are recognised and change no recipient, counter or proof."""
    parameters.clear_caches()
    stack = make_stack(with_scheduler=False, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    campaign = create(recipients=rows(1, 2))
    before = [r.attribute_values for r in stored(campaign["id"])]
    assert all(r["ok"] for r in post_test(campaign["id"], sample(1, 8)).body["results"])
    wait_until(lambda: stack.fake.stats()["webhooks_posted"] >= 6, 30, "the six status webhooks to be posted")
    unchanged_draft(campaign["id"], 2)
    assert [r.attribute_values for r in stored(campaign["id"])] == before
    with pytest.raises(DoesNotExist):  # no proof of absence rose from them either
        NumberProof.get(*NumberProof.key("1234567890"), consistent_read=True)

    # And one replayed by hand, through the webhook handler: it is answered as a test send's.
    record = stack.fake.sends()[0]
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"display_phone_number": "15550000000",
                                                    "phone_number_id": "1234567890"},
                                       "statuses": [{"id": record["wamid"], "status": "failed",
                                                     "timestamp": "1795889160", "recipient_id": record["to"],
                                                     "biz_opaque_callback_data": record["callback"],
                                                     "errors": [{"code": 131050, "title": "stopped"}]}]}}]}]})
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": signature_header(body.encode(), stack.secret["app_secret"])}
    status, answer, _ = invoke(webhook_event("POST", body, headers))
    assert status == 200 and json.loads(answer) == {"statuses": 1, "test_send": 1}
    assert suppressions.find(record["to"]) is None  # a test send's 131050 suppresses nothing
    unchanged_draft(campaign["id"], 2)


def test_test_sends_log_numbers_masked(stack):
    campaign = create(recipients=rows(1))
    with captured_logs() as logs:
        post_test(campaign["id"], sample(7))
    logged = logs.getvalue()
    assert "test send" in logged
    assert digits(7) not in logged and digits(7)[2:] not in logged
