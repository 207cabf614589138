"""Phone numbers as resources: the throughput limit their owners set, and who sends from them now.

A number nobody configured has Meta's default limit (budget.DEFAULT_THROUGHPUT_MPS). Configuring
one writes its limit only (the roster its senders keep is theirs); the senders' next heartbeats
re-split it (campaigns/budget.py).
"""

from __future__ import annotations

import time

from pynamodb.exceptions import DoesNotExist

from .budget import DEFAULT_THROUGHPUT_MPS, fair_shares, live_asks
from .models import Number, write_if


def configure(phone_number_id: str, throughput_mps: int) -> dict:
    item = Number(*Number.key(phone_number_id))
    write_if(item, [Number.phone_number_id.set(phone_number_id), Number.throughput_mps.set(throughput_mps),
                    Number.updated_at.set(time.time())])
    return number_view(phone_number_id)


def number_view(phone_number_id: str, now: float | None = None) -> dict:
    """The number's limit and the shards sending from it now, each with its ask and its share."""
    now = time.time() if now is None else now
    try:
        item = Number.get(*Number.key(phone_number_id), consistent_read=True)
    except DoesNotExist:
        item = None
    limit = float(item.throughput_mps) if item and item.throughput_mps else DEFAULT_THROUGHPUT_MPS
    asks = live_asks(item.roster.as_dict() if item and item.roster else {}, now)
    shares = fair_shares(asks, limit)
    return {
        "phone_number_id": phone_number_id,
        "throughput_mps": limit,
        "configured": bool(item and item.throughput_mps),
        "in_use_mps": round(sum(shares.values()), 2),
        "sending": [{"campaign_id": key.rsplit(":", 1)[0], "shard": int(key.rsplit(":", 1)[1]),
                     "asks_mps": round(asks[key], 2), "share_mps": round(shares[key], 2)}
                    for key in sorted(shares)],
    }
