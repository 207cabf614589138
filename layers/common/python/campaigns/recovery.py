"""Recovery: the backstop that finds stalled shards and due campaigns, and acts on reported failures.

A tick costs two Queries of the sparse DueIndex, which holds only shards that are being sent
(or wait for a retry time) and scheduled campaigns: its cost follows the work in progress,
never the history in the table.
"""

from __future__ import annotations

import time

from . import invoker, service
from . import lease as leases
from .config import Settings
from .lifecycle import start_shard
from .models import DUE_CAMPAIGN, DUE_SHARD, Campaign, Shard
from .observability import Metric, count, logger


def _shard_of(pk: str) -> tuple[str, int]:
    # CAMPAIGN#<id>#SHARD#<n>
    _, campaign_id, _, shard = pk.split("#")
    return campaign_id, int(shard)


def tick(settings: Settings, now: float | None = None) -> dict:
    """One scheduled run: take over every shard whose lease expired, start due campaigns (scheduled
    ones, and those the provider paused until a time that has passed)."""
    now = time.time() if now is None else now
    stuck = list(Shard.due.query(DUE_SHARD, Shard.due_at < now))
    count(Metric.STUCK_SHARDS, len(stuck))
    taken = 0
    for item in stuck:
        campaign_id, shard = _shard_of(item.PK)
        if start_shard(campaign_id, shard, settings, leases.free_or_expired(now)):
            taken += 1
            logger.info("took over a stalled shard", extra={"campaign_id": campaign_id, "shard": shard})
    count(Metric.SHARDS_TAKEN_OVER, taken)
    started = 0
    for item in Campaign.due.query(DUE_CAMPAIGN, Campaign.due_at <= now):
        if service.resume_when_due(item.PK.split("#", 1)[1], settings, now):
            started += 1
    return {"due_shards": len(stuck), "taken_over": taken, "scheduled_started": started}


def on_failure(record: dict, settings: Settings) -> dict:
    """Lambda reports a failed sender batch (timeout, crash, out of memory): take its shard over now.

    The takeover is conditioned on the shard still being leased under the failed event's
    token, so a record for a batch that had already handed off, or a record delivered
    twice, changes nothing.
    """
    event = invoker.SenderEvent.parse(record.get("requestPayload") or {})
    if event is None:
        logger.warning("on-failure record without a sender event", extra={"record": record.get("requestContext")})
        return {"taken_over": 0}
    condition = leases.token_is(event.token)
    taken = start_shard(event.campaign_id, event.shard, settings, condition)
    if taken:
        count(Metric.SHARDS_TAKEN_OVER)
        logger.info(
            "took over the shard of a failed batch",
            extra={"campaign_id": event.campaign_id, "shard": event.shard,
                   "condition": record.get("requestContext", {})},
        )
    return {"taken_over": int(taken)}


def handle(event: dict, settings: Settings) -> dict:
    """The recovery function's one entry: a destination record, or a schedule tick."""
    if "requestPayload" in event and "requestContext" in event:
        return on_failure(event, settings)
    return tick(settings)
