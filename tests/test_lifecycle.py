"""A person's actions mid-send, and each class of per-recipient error, end to end on the local stack."""

from __future__ import annotations

from campaigns import service
from campaigns.config import settings
from campaigns.models import Suppression
from tests.helpers import audit, new_campaign, recipients, senders_stopped, status, wait_until


def test_pause_then_resume_at_once_finishes_with_nothing_lost_or_doubled(make_stack):
    stack = make_stack(fake_latency_ms=20)
    campaign = new_campaign(150, rate=160)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 20, 30, "some sends")
    service.pause(campaign.id)
    service.resume(campaign.id, settings())  # races the batches that are still noticing the pause
    wait_until(lambda: status(campaign)["status"] == "completed", 90, "the campaign to complete")
    result = audit(campaign, stack.fake)
    assert result["statuses"] == {"sent": 150} and result["duplicates"] == {}


def test_pause_stops_sending_and_resume_continues(make_stack):
    stack = make_stack(fake_latency_ms=20, with_scheduler=False)
    campaign = new_campaign(150)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 20, 30, "some sends")
    service.pause(campaign.id)
    wait_until(lambda: senders_stopped(stack), 30, "the batches to stop once they see the pause")
    paused_at = stack.fake.stats()["accepted"]
    assert status(campaign)["status"] == "paused" and paused_at < 150
    stack.scheduler.tick()  # recovery finds nothing due for a paused campaign
    wait_until(lambda: not stack.runtime.invocations() and not stack.runtime.queued(), 30, "the tick to end")
    assert senders_stopped(stack) and stack.fake.stats()["accepted"] == paused_at
    service.resume(campaign.id, settings())
    wait_until(lambda: status(campaign)["status"] == "completed", 60, "the campaign to complete")
    assert audit(campaign, stack.fake)["statuses"] == {"sent": 150}


def test_cancel_mid_send_stops_for_good(make_stack):
    stack = make_stack(fake_latency_ms=20, with_scheduler=False)
    campaign = new_campaign(150)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 20, 30, "some sends")
    service.cancel(campaign.id)
    wait_until(lambda: senders_stopped(stack), 30, "the batches to stop")
    sent = stack.fake.stats()["accepted"]
    stack.scheduler.tick()  # recovery finds nothing due for a cancelled campaign
    wait_until(lambda: not stack.runtime.invocations() and not stack.runtime.queued(), 30, "the tick to end")
    assert senders_stopped(stack)
    assert stack.fake.stats()["accepted"] == sent < 150
    assert status(campaign)["status"] == "cancelled"
    result = audit(campaign, stack.fake)
    assert result["duplicates"] == {} and result["sent_not_received"] == []


def test_each_error_class_ends_where_the_table_says(make_stack):
    stack = make_stack(fake_latency_ms=5, max_attempts=3)
    campaign = new_campaign(40)
    phones = sorted(r.phone for r in recipients(campaign))
    stack.fake.configure(reject_numbers={phones[0]: 131026, phones[1]: 131050, phones[2]: 131000})
    service.send(campaign.id, settings())
    wait_until(lambda: status(campaign)["status"] == "completed", 90, "the campaign to complete")
    by_phone = {r.phone: r for r in recipients(campaign)}
    assert (by_phone[phones[0]].status, by_phone[phones[0]].error_code) == ("failed", 131026)
    assert (by_phone[phones[1]].status, by_phone[phones[1]].error_code) == ("failed", 131050)
    assert Suppression.count(Suppression.key(phones[1])[0]) == 1
    # Retryable: tried max_attempts times, then failed with the last code.
    assert (by_phone[phones[2]].status, by_phone[phones[2]].error_code) == ("failed", 131000)
    assert int(by_phone[phones[2]].attempts) == 2  # attempts counted before the last try
    assert status(campaign)["counts"]["failed"] == 3 and status(campaign)["counts"]["sent"] == 37

    # retry-failed: only the retryable failure goes back, and is sent once the provider recovers.
    stack.fake.configure(reject_numbers={})
    assert service.retry_failed(campaign.id, settings()) == 1
    wait_until(lambda: status(campaign)["status"] == "completed", 60, "the retried recipient to be sent")
    assert by_phone[phones[2]].refresh() is None and by_phone[phones[2]].status == "sent"
    assert status(campaign)["counts"]["sent"] == 38 and status(campaign)["counts"]["failed"] == 2
