"""Clones (POST /campaigns/{id}/clone, campaigns/clones.py): a new draft with the source's template and
settings, and its recipients picked by outcome; one source run for real against the fake Graph API (its
status webhooks coming back through the gateway), one whose outcomes are written in the store."""

from __future__ import annotations

import time

import pytest
from aws_lambda_powertools.utilities import parameters

from campaigns import clones, ledger, suppressions, views
from campaigns.models import Campaign, Recipient
from tests.helpers import wait_until
from tests.test_api import assert_error, call, create, digits, rows, stored, table_items

WINDOW = {"start": "09:00", "end": "20:00", "timezone": "Asia/Kolkata", "days": ["mon", "tue"]}


@pytest.fixture
def stack(make_stack):
    parameters.clear_caches()  # each stack has its own secret
    return make_stack(with_scheduler=False)


def clone(campaign_id: str, **body):
    return call("POST", f"/campaigns/{campaign_id}/clone", body)


def phones_of(campaign_id: str) -> list[tuple[str, list[str]]]:
    """The campaign's recipients in import order (index = seq * shards + shard), with their variables."""
    found = sorted(stored(campaign_id), key=lambda r: (r.seq, r.shard))
    return [(r.phone, list(r.variables)) for r in found]


def set_outcome(rec: Recipient, status: str, **stamps: float) -> None:
    """What a send and its webhooks would have left on a recipient, written directly."""
    rec.update(actions=[Recipient.status.set(status), *(getattr(Recipient, k).set(v) for k, v in stamps.items())])


# The source's nine recipients, by what became of them (statuses.py / ledger.py write these).
OUTCOMES = {
    0: ("pending", {}),
    1: ("sent", {"sent_at": 1.0}),  # accepted, never reported delivered
    2: ("sent", {"sent_at": 1.0, "delivered_at": 2.0}),  # delivered, not read
    3: ("sent", {"sent_at": 1.0, "delivered_at": 2.0, "read_at": 3.0}),
    4: ("failed", {"failed_at": 1.0, "error_code": 131026}),
    5: ("in_doubt", {"in_doubt_at": 1.0}),
    6: ("expired", {"expired_at": 1.0}),
    7: ("skipped", {}),  # opted out (its number later taken off the list)
    8: ("sending", {"claimed_at": 1.0}),  # claimed by a batch right now
    9: ("failed", {"failed_at": 1.0, "delivered_at": 2.0, "error_code": 131026}),  # delivered to one device
}
PICKS = {
    "all": list(range(10)),
    "failed": [4, 9],
    "not_delivered": [0, 1, 4, 5, 6],
    "not_read": [0, 1, 2, 4, 5, 6, 9],
    "none": [],
}


@pytest.fixture
def source(stack):
    """A campaign over three shards whose recipients ended every way a recipient can."""
    campaign = create(recipients=rows(*OUTCOMES), rate=200, in_doubt_policy="resend", send_window=WINDOW,
                      api="marketing_messages")
    by_phone = {r.phone: r for r in stored(campaign["id"])}
    for n, (status, stamps) in OUTCOMES.items():
        set_outcome(by_phone[digits(n)], status, **stamps)
    return campaign


@pytest.mark.parametrize("pick", list(PICKS))
def test_a_clone_gets_the_recipients_its_pick_takes_in_import_order_with_their_variables(source, pick):
    answer = clone(source["id"], name="again", recipients=pick)
    assert answer.status == 201, answer.body
    body = answer.body
    assert body["id"] != source["id"] and body["cloned_from"] == source["id"]
    assert answer.headers["location"] == f"/campaigns/{body['id']}"
    assert (body["name"], body["status"]) == ("again", "draft")
    assert body["total"] == len(PICKS[pick]) and body["counts"]["pending"] == len(PICKS[pick])
    assert phones_of(body["id"]) == [(digits(n), [f"name{n}", "20%"]) for n in PICKS[pick]]
    if pick == "none":
        assert "import" not in body
    else:
        assert body["import"]["accepted"] == len(PICKS[pick]) and body["import"]["total"] == len(PICKS[pick])
    # Every recipient of the clone starts afresh.
    assert all(r.status == "pending" and r.sent_at is None and r.delivered_at is None for r in stored(body["id"]))


def test_a_clone_has_the_sources_template_and_settings_and_is_a_draft(source):
    body = clone(source["id"], name="copy").body
    shown = call("GET", f"/campaigns/{source['id']}").body
    for name in ("template", "phone_number_id", "rate", "in_doubt_policy", "send_window", "api", "shards"):
        assert body[name] == shown[name], name
    assert body["api"] == "marketing_messages" and body["rate"] == 200 and body["shards"] == 3
    assert body["send_at"] is None and body["expires_at"] is None and body["started_at"] is None
    # The source is as it was.
    assert call("GET", f"/campaigns/{source['id']}").body == shown


def test_a_scheduled_source_gives_a_draft_and_its_expiry_is_kept_only_while_ahead(stack):
    now = time.time()
    scheduled = create(recipients=rows(1), send_at=int(now) + 3600, expires_at=int(now) + 7200)
    body = clone(scheduled["id"], name="later", recipients="all").body
    assert body["status"] == "draft" and body["send_at"] is None
    assert body["expires_at"] == scheduled["expires_at"]
    assert views.get_campaign(body["id"]).due_kind is None  # not in the DueIndex: recovery never starts it

    Campaign(*Campaign.key(scheduled["id"])).update(actions=[Campaign.expires_at.set(now - 60)])
    body = clone(scheduled["id"], name="expired source").body
    assert body["expires_at"] is None  # an expiry in the past would expire the clone at once


def test_a_clone_without_a_body_is_named_after_its_source_and_has_no_recipients(source):
    answer = call("POST", f"/campaigns/{source['id']}/clone")
    assert answer.status == 201, answer.body
    assert answer.body["name"] == "Diwali (copy)" and answer.body["total"] == 0


def test_a_clone_drops_the_numbers_on_the_suppression_list_as_an_import_does(source):
    suppressions.suppress(digits(4), suppressions.reply_reason("STOP"), suppressions.SOURCE_REPLY)
    body = clone(source["id"], name="again", recipients="failed").body
    assert body["import"]["accepted"] == 1 and body["import"]["suppressed"] == 1
    assert phones_of(body["id"]) == [(digits(9), ["name9", "20%"])]


def test_a_big_pick_goes_in_several_imports(source, monkeypatch):
    monkeypatch.setattr(clones, "IMPORT_CHUNK", 3)
    body = clone(source["id"], name="chunks", recipients="all").body
    assert body["import"]["accepted"] == 10 and body["total"] == 10
    assert len(views.get_campaign(body["id"]).imports) == 4
    assert [p for p, _ in phones_of(body["id"])] == [digits(n) for n in range(10)]


def test_more_than_a_clone_takes_is_413_and_writes_nothing(source, monkeypatch):
    monkeypatch.setattr(clones, "MAX_CLONE_ROWS", 4)
    before = table_items()
    assert_error(clone(source["id"], name="too many", recipients="all"), 413, "too_many_rows", "recipients")
    assert table_items() == before
    assert clone(source["id"], name="fits", recipients="not_delivered").status == 413
    assert clone(source["id"], name="fits", recipients="failed").status == 201


def test_a_source_too_big_to_read_within_the_budget_is_413_and_writes_nothing(source, monkeypatch):
    monkeypatch.setattr(clones, "READ_SECONDS", -1.0)  # past the budget at the first look
    monkeypatch.setattr(ledger, "SCAN_PAGE", 2)  # which comes after every 2 recipients read
    before = table_items()
    answer = clone(source["id"], name="too big", recipients="failed")
    assert_error(answer, 413, "too_many_rows", "recipients")
    assert "too many recipients to be read" in answer.error["message"]
    assert table_items() == before


BAD_CLONES = [
    ("an unknown pick", {"name": "x", "recipients": "delivered"}, "recipients"),
    ("an empty name", {"name": "", "recipients": "all"}, "name"),
    ("a name too long", {"name": "x" * 201}, "name"),
    ("an unknown field", {"name": "x", "send_at": 1}, "send_at"),
]


@pytest.mark.parametrize(("why", "body", "field"), BAD_CLONES, ids=[b[0] for b in BAD_CLONES])
def test_a_bad_clone_request_is_422_naming_the_field_and_writes_nothing(source, why, body, field):
    before = table_items()
    assert_error(call("POST", f"/campaigns/{source['id']}/clone", body), 422, "validation_error", field)
    assert table_items() == before


def test_a_clone_of_an_unknown_campaign_is_404_and_writes_nothing(stack):
    before = table_items()
    assert_error(clone("0123456789abcdef", name="x"), 404, "not_found", "id")
    assert table_items() == before


def test_an_unknown_api_is_422_naming_it(stack):
    answer = call("POST", "/campaigns", {"name": "x", "phone_number_id": "1", "api": "sms",
                                         "template": {"name": "t", "language": "en_US"}})
    assert_error(answer, 422, "validation_error", "api")
    assert table_items() == []


def test_a_clone_of_a_campaign_run_for_real_picks_by_what_the_provider_and_its_webhooks_said(make_stack):
    """The source sent through the fake: one number refused (131026), the others accepted, and their sent,
    delivered and read statuses posted back through the gateway; then the clones pick by outcome."""
    parameters.clear_caches()
    stack = make_stack(with_scheduler=False, fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    stack.fake.configure(reject_numbers={digits(2): 131026})
    source = create(recipients=rows(*range(6)))
    assert call("POST", f"/campaigns/{source['id']}/send").status == 200
    done = wait_until(lambda: (s := call("GET", f"/campaigns/{source['id']}").body)["status"] == "completed"
                      and s["counts"]["read"] == 5 and s, 60, "the source to complete and be read")
    assert (done["counts"]["sent"], done["counts"]["failed"]) == (5, 1)

    for pick, expected in (("failed", [2]), ("not_delivered", [2]), ("not_read", [2]), ("all", list(range(6)))):
        body = clone(source["id"], name=f"again: {pick}", recipients=pick).body
        assert body["status"] == "draft" and body["template"] == source["template"]
        assert phones_of(body["id"]) == [(digits(n), [f"name{n}", "20%"]) for n in expected], pick
    # A clone is a campaign like any other: it sends.
    stack.fake.configure(reject_numbers={})
    again = clone(source["id"], name="the failed one, again", recipients="failed").body
    assert call("POST", f"/campaigns/{again['id']}/send").status == 200
    wait_until(lambda: call("GET", f"/campaigns/{again['id']}").body["status"] == "completed", 60,
               "the clone to complete")
    assert [s["to"] for s in stack.fake.sends()].count(digits(2)) == 1
