"""End-to-end sending through the local stack: real sender processes, moto, the fake Graph API."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

from campaigns import invoker, sender, service
from campaigns import lease as leases
from campaigns.config import settings
from tests.helpers import audit, new_campaign, recipients, status, wait_until


def completed(campaign):
    return lambda: status(campaign)["status"] == "completed"


def test_campaign_is_sent_completely_once(make_stack):
    stack = make_stack(fake_latency_ms=10)
    campaign = new_campaign(120, rate=160)  # two shards
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = audit(campaign, stack.fake)
    assert result["lost"] == 0
    assert result["duplicates"] == {}
    assert result["statuses"] == {"sent": 120}
    assert status(campaign)["counts"]["sent"] == 120


def test_sends_go_on_while_a_heartbeat_waits_on_the_store(make_stack, monkeypatch):
    """The heartbeat has its own thread: a slow renewal must not stop the batch from sending."""
    stack = make_stack(fake_latency_ms=5, with_scheduler=False)
    campaign = new_campaign(60)  # one shard
    events: list[dict] = []
    monkeypatch.setattr(invoker, "invoke_sender", lambda _settings, event: events.append(event) or True)
    service.send(campaign.id, settings())  # reserves the shard for an event, which this test runs itself

    renew, sent_while_renewing = leases.renew, []

    def slow_renew(lease, *args, **kwargs):
        # The first renewal is held until the batch has made 10 more sends (or 10 s passed): a
        # store that is slow to answer.
        if sent_while_renewing:
            return renew(lease, *args, **kwargs)
        before = stack.fake.stats()["accepted"]
        with contextlib.suppress(AssertionError):  # a timeout: the assertion below says what went wrong
            wait_until(lambda: stack.fake.stats()["accepted"] >= min(before + 10, 60), 10, "sends meanwhile")
        sent_while_renewing.append(stack.fake.stats()["accepted"] - before)
        return renew(lease, *args, **kwargs)

    monkeypatch.setattr(leases, "renew", slow_renew)
    report = sender.run_batch(events[0], lambda: 60.0, settings())
    assert report["outcome"] == "done" and report["sent"] == 60
    assert sent_while_renewing[0] >= 10  # the first heartbeat starts before the first send
    assert status(campaign)["status"] == "completed"
    assert audit(campaign, stack.fake)["duplicates"] == {}


def test_a_store_error_in_the_heartbeat_fails_the_batch_once_its_sends_are_checkpointed(make_stack, monkeypatch):
    stack = make_stack(fake_latency_ms=5, with_scheduler=False)
    campaign = new_campaign(200)
    events: list[dict] = []
    monkeypatch.setattr(invoker, "invoke_sender", lambda _settings, event: events.append(event) or True)
    service.send(campaign.id, settings())

    renew, renewals = leases.renew, []

    def failing_renew(lease, *args, **kwargs):
        renewals.append(lease)
        if len(renewals) == 3:
            raise RuntimeError("the store is unavailable")
        return renew(lease, *args, **kwargs)

    monkeypatch.setattr(leases, "renew", failing_renew)
    with pytest.raises(RuntimeError, match="unavailable"):
        sender.run_batch(events[0], lambda: 60.0, settings())
    statuses = Counter(r.status for r in recipients(campaign))
    assert statuses["sending"] == 0  # every claim got its checkpoint before the batch failed
    assert 0 < statuses["sent"] == stack.fake.stats()["accepted"] < 200
