"""Invariants 9 and 10 as counts of DynamoDB calls (counting is not timing): an idle recovery tick
reads as much with a long history as with a short one, a message costs its claim and its checkpoint
and no transaction, and a fast campaign's recipients are spread over partitions of their own."""

from __future__ import annotations

from collections import Counter

from bench.costs import idle_tick_reads, send_campaign, webhook_costs
from campaigns import service
from campaigns.config import settings
from campaigns.models import Recipient, shard_pk

MESSAGES = 400
# Claim + checkpoint, and the batch's few writes of its own (acquire, heartbeats twice a second on
# the local stack, release): a third write per message, say a counter bumped per send, is far over.
WRITES_PER_MESSAGE_BOUND = 2.1


def test_an_idle_tick_reads_the_same_however_many_campaigns_have_finished(table):
    """Stuck detection is a Query of the sparse DueIndex, never a Scan of the history."""
    rows = idle_tick_reads([10, 500])
    (_, units_short, items_short), (_, units_long, items_long) = rows
    assert (units_long, items_long) == (units_short, items_short), rows
    assert units_long <= 2.0, rows


def test_a_message_costs_two_writes_and_no_transaction(make_stack):
    make_stack(fake_latency_ms=5, with_scheduler=False)
    meter, _cpu, _wall, _campaign_id = send_campaign(MESSAGES)
    assert meter.calls["TransactWriteItems"] == 0, dict(meter.calls)
    assert meter.writes / MESSAGES <= WRITES_PER_MESSAGE_BOUND, dict(meter.calls)


def test_a_status_writes_only_what_it_changes(make_stack):
    """After the sender's checkpoint a `sent` tells nothing new: a read, and no write of the recipient
    (what is left is its number's proof watermark, at most one write per 0.25 s of claim time). A
    `delivered` and a `read` each write the recipient and one counter."""
    stack = make_stack(fake_latency_ms=5, with_scheduler=False)
    _meter, _cpu, _wall, campaign_id = send_campaign(200)
    per_kind = webhook_costs(campaign_id, stack.secret["app_secret"])
    assert per_kind["sent"]["read_units"] == 1.0 and per_kind["sent"]["write_units"] < 0.5, per_kind
    assert per_kind["delivered"]["write_units"] == per_kind["read"]["write_units"] == 2.0, per_kind


def test_a_1000_mps_campaign_spreads_its_recipients_over_13_shard_partitions(table):
    """DynamoDB takes <= 1 000 WCU/s per partition: at two writes a message, a shard carries <= 80 mps."""
    spec = service.CampaignSpec(name="fast", phone_number_id="1", rate=1000,
                                template={"name": "t", "language": "en_US", "components": []})
    campaign = service.create_campaign(spec, settings())
    service.add_recipients(campaign.id, [service.RecipientRow(f"9198{n:08d}") for n in range(1300)])
    assert int(campaign.shard_count) == 13
    per_shard = Counter()
    for shard in range(13):
        per_shard[shard] = sum(1 for _ in Recipient.query(shard_pk(campaign.id, shard), Recipient.SK.startswith("R#")))
    assert sum(per_shard.values()) == 1300
    assert max(per_shard.values()) - min(per_shard.values()) <= 1, per_shard
