"""End-to-end sending through the local stack: real sender processes, moto, the fake Graph API."""

from __future__ import annotations

from campaigns import service
from campaigns.config import settings
from tests.helpers import audit, new_campaign, status, wait_until


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
