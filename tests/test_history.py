"""A campaign's history (campaigns/history.py): what lifecycle records, in time order and in pages; a
wait recorded once however many shards park for it; a history write that fails fails nothing; and
Meta's template events, through the signed webhook, leave the provider's pause and resume."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import pytest
from aws_lambda_powertools.utilities import parameters

from campaigns import history, lifecycle, service
from campaigns.config import settings
from campaigns.errors import Unprocessable
from campaigns.models import Campaign, CampaignEvent
from functions.webhook.app import lambda_handler as webhook_handler
from local.lambda_process import LambdaContext
from tests.helpers import TEMPLATE, captured_logs
from tests.test_webhook import webhook_event


class Clock:
    """history's clock: a millisecond apart each call, so the order under test is the order written."""

    def __init__(self, now: float = 1_796_000_000.0):
        self.now = now

    def time(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(history, "time", clock)
    return clock


def draft(send_at: float | None = None) -> str:
    spec = service.CampaignSpec(name="history", phone_number_id="1234567890", template=TEMPLATE, rate=160,
                                send_at=send_at)
    return service.create_campaign(spec, settings()).id


def sending() -> str:
    """A campaign in `sending` with no batch started (lifecycle's write alone)."""
    campaign_id = draft()
    lifecycle.transition(campaign_id, "send")
    return campaign_id


def kinds(campaign_id: str, **kw) -> list[tuple[str, str]]:
    items, _ = history.events(campaign_id, 100, **kw)
    return [(e["kind"], e["by"]) for e in items]


def test_events_come_back_in_time_order_in_pages_and_newest_first(table, clock):
    campaign_id = draft()
    written = ["started", "paused", "resumed", "waiting", "waiting_over", "completed", "retried"]
    for n, kind in enumerate(written):
        history.record(campaign_id, kind, "system", f"cause {n}", until=1_796_000_100.0 if kind == "waiting" else None,
                       code=131048 if kind == "paused" else None)
    history.record(draft(), "started", "person", "another campaign's")  # in its own partition
    seen, token, pages = [], None, 0
    while True:
        items, token = history.events(campaign_id, 3, token)
        assert len(items) <= 3
        seen += items
        pages += 1
        if token is None:
            break
    assert [e["kind"] for e in seen] == written and pages == 3
    assert [e["cause"] for e in seen] == [f"cause {n}" for n in range(len(written))]
    assert seen[1]["code"] == 131048 and seen[3]["until"] == "2026-11-30T00:55:00.000+00:00"
    assert seen[0]["at"] < seen[1]["at"] and seen[0]["until"] is None and seen[0]["code"] is None
    newest, _ = history.events(campaign_id, 2, newest_first=True)
    assert [e["kind"] for e in newest] == ["retried", "completed"]
    stored = list(CampaignEvent.query(f"CAMPAIGN#{campaign_id}", CampaignEvent.SK.startswith("EVENT#")))
    assert all(e.expires_at == int(e.at) + history.KEEP_SECONDS for e in stored)  # the table's TTL
    assert all(e.SK.split("#")[1] == f"{round(e.at * 1000):013d}" for e in stored)


def test_a_token_is_refused_for_another_campaign_or_if_it_is_not_ours(table, clock):
    first, second = draft(), draft()
    for campaign_id in (first, second):
        for _ in range(3):
            history.record(campaign_id, "paused", "person", "x")
    _, token = history.events(first, 1)
    assert token is not None
    with pytest.raises(Unprocessable) as refused:
        history.events(second, 1, token)
    assert refused.value.field == "next"
    with pytest.raises(Unprocessable):
        history.events(first, 1, "not-a-token")


def test_every_status_change_of_lifecycle_and_service_is_recorded_with_who_and_why(table, clock):
    at = time.time() + 3600
    scheduled = draft(send_at=at)
    lifecycle.transition(scheduled, "send", by="system", cause="its scheduled time came")
    service.pause(scheduled)
    service.resume(scheduled, settings())  # no open shard: nothing starts
    assert lifecycle.pause_for_error(scheduled, "(#131048) spam rate limit hit", 131048)
    service.cancel(scheduled)
    items, _ = history.events(scheduled, 100)
    assert [(e["kind"], e["by"], e["cause"]) for e in items] == [
        ("scheduled", "person", items[0]["cause"]),
        ("started", "system", "its scheduled time came"),
        ("paused", "person", "paused by request"),
        ("resumed", "person", "resume requested"),
        ("paused", "provider", "(#131048) spam rate limit hit"),
        ("cancelled", "person", "cancel requested"),
    ]
    assert items[0]["until"] == items[0]["cause"].removeprefix("to start at ") and items[4]["code"] == 131048

    other = draft()
    service.schedule(other, at)
    with pytest.raises(service.Conflict):
        service.pause(other)  # refused: nothing written, nothing recorded
    assert kinds(other) == [("scheduled", "person")]

    finishing = sending()
    Campaign(*Campaign.key(finishing)).update(actions=[Campaign.open_shards.set({0, 1})])
    lifecycle.close_shard(finishing, 0)
    lifecycle.close_shard(finishing, 1)
    lifecycle.close_shard(finishing, 1)  # a second close of the last shard completes nothing more
    assert kinds(finishing) == [("started", "person"), ("completed", "system")]
    assert lifecycle.pause_for_error(sending(), "(#190) token expired", 190)  # a fatal error's own pause
    assert not lifecycle.pause_for_error(finishing, "late", 190)  # completed: not paused, not recorded
    assert kinds(finishing) == [("started", "person"), ("completed", "system")]


def test_a_wait_is_recorded_once_however_many_shards_park_and_again_when_its_reason_changes(table, clock):
    campaign_id = sending()
    opening = time.time() + 7200
    for _shard in range(3):  # three shards park outside the window: one event
        lifecycle.wait_for(campaign_id, "send_window", opening)
    lifecycle.wait_for(campaign_id, "messaging_limit", opening + 60)  # another reason: another event
    lifecycle.wait_for(campaign_id, "messaging_limit", opening + 90)
    for _shard in range(3):  # every batch that starts again clears it: the first one records it
        lifecycle.stop_waiting(campaign_id)
    lifecycle.wait_for(campaign_id, "send_window", opening)  # waiting again after it was over
    items, _ = history.events(campaign_id, 100)
    assert [(e["kind"], e["cause"]) for e in items] == [
        ("started", "send requested"), ("waiting", "send_window"), ("waiting", "messaging_limit"),
        ("waiting_over", "messaging_limit"), ("waiting", "send_window")]
    assert items[1]["until"] is not None and items[2]["by"] == "system"
    campaign = Campaign.get(*Campaign.key(campaign_id), consistent_read=True)
    assert (campaign.waiting_reason, campaign.waiting_until) == ("send_window", opening)  # the status as before

    paused = sending()
    service.pause(paused)
    lifecycle.wait_for(paused, "send_window", opening)  # not sending: no wait written, none recorded
    assert kinds(paused) == [("started", "person"), ("paused", "person")]


def test_a_history_write_that_fails_does_not_fail_the_pause(table, clock, monkeypatch):
    campaign_id = sending()
    counted = []

    def broken(*args, **kwargs):
        raise RuntimeError("the store refused the event")

    monkeypatch.setattr(history, "update_without_read_back", broken)
    monkeypatch.setattr(history, "count_now", counted.append)
    with captured_logs() as logs:
        lifecycle.wait_for(campaign_id, "send_window", time.time() + 60)
        paused = service.pause(campaign_id)
    assert paused.status == "paused"
    campaign = Campaign.get(*Campaign.key(campaign_id), consistent_read=True)
    assert (campaign.status, campaign.waiting_reason) == ("paused", "send_window")  # both written
    assert counted == ["HistoryWritesFailed"] * 2
    assert "history event not written" in logs.getvalue() and campaign_id in logs.getvalue()
    monkeypatch.undo()
    assert kinds(campaign_id) == [("started", "person")]  # the two events are the ones missing


# -- Meta's template events, through the signed webhook ----------------------------------------------


def template_event(event: str, title: str | None = None) -> bytes:
    value = {"event": event, "message_template_id": 1234, "message_template_name": TEMPLATE["name"],
             "message_template_language": TEMPLATE["language"], "reason": "LOW_QUALITY"}
    if title:
        value["other_info"] = {"title": title, "description": "the template's quality improved"}
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "waba-1", "time": 1796000000,
                       "changes": [{"field": "message_template_status_update", "value": value}]}]}).encode()


def post_signed(body: bytes, app_secret: str) -> int:
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()}
    event = webhook_event("POST", body.decode(), headers)
    context = LambdaContext(
        aws_request_id=str(uuid.uuid4()), function_name="webhook", function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:webhook", memory_limit_in_mb="512",
        log_group_name="/aws/lambda/webhook", log_stream_name="local", deadline_ms=int(time.time() * 1000) + 10_000)
    return webhook_handler(event, context)["statusCode"]


def test_a_template_meta_pauses_leaves_the_providers_pause_and_its_unpause_the_resume(make_stack):
    parameters.clear_caches()  # each stack has its own secret
    stack = make_stack(with_scheduler=False)
    by_meta, by_person = sending(), sending()
    service.pause(by_person)
    assert post_signed(template_event("PAUSED"), stack.secret["app_secret"]) == 200
    assert post_signed(template_event("APPROVED", title="UNPAUSE"), stack.secret["app_secret"]) == 200
    items, _ = history.events(by_meta, 100)
    assert [(e["kind"], e["by"]) for e in items] == [("started", "person"), ("paused", "provider"),
                                                     ("resumed", "provider")]
    assert items[1]["cause"] == "template diwali_offer (en_US) PAUSED by Meta: LOW_QUALITY"
    assert items[2]["cause"] == "template diwali_offer (en_US) APPROVED UNPAUSE by Meta"
    # The person's pause stays the person's: the event neither paused nor resumed it.
    assert kinds(by_person) == [("started", "person"), ("paused", "person")]
