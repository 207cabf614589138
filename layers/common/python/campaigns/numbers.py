"""Phone numbers as resources: the throughput limit their owners set, and who sends from them now.

A number nobody configured has Meta's default limit (budget.DEFAULT_THROUGHPUT_MPS). Configuring
one writes its limit only (the roster its senders keep is theirs); the senders' next heartbeats
re-split it (campaigns/budget.py).
"""

from __future__ import annotations

import time

from pynamodb.exceptions import DoesNotExist

from . import config
from .budget import DEFAULT_THROUGHPUT_MPS, fair_shares, live_asks
from .config import Settings
from .errors import Unprocessable
from .models import LIST_NUMBERS, Number, Quota, write_if
from .reach import used_and_next_room
from .timestamps import iso_utc, now_iso


def configure(phone_number_id: str, throughput_mps: int, messaging_limit: int | None = None,
              portfolio: str | None = None, secret: str | None = None,
              business_account_id: str | None = None) -> dict:
    """Set the number's limits and token (all of them: what is left out takes its default)."""
    prefix = config.settings().secret_prefix
    if secret and not (prefix and secret.startswith(prefix)):
        raise Unprocessable(f"secret must be the name of a secret under {prefix or 'the stack prefix'!r} "
                            "(the functions may read no other)", field="secret")
    item = Number(*Number.key(phone_number_id))
    write_if(item, [Number.phone_number_id.set(phone_number_id), Number.throughput_mps.set(throughput_mps),
                    Number.messaging_limit.set(messaging_limit) if messaging_limit else Number.messaging_limit.remove(),
                    Number.portfolio.set(portfolio) if portfolio else Number.portfolio.remove(),
                    Number.secret.set(secret) if secret else Number.secret.remove(),
                    Number.business_account_id.set(business_account_id) if business_account_id
                    else Number.business_account_id.remove(),
                    Number.updated_at.set(time.time()), Number.list_pk.set(LIST_NUMBERS),
                    Number.created_at.set(Number.created_at | now_iso())])
    return number_view(phone_number_id)


def secret_of(phone_number_id: str) -> str | None:
    """The name of the secret the number's token is in (a number of another account), None: the stack's."""
    try:
        return Number.get(*Number.key(phone_number_id), consistent_read=True).secret or None
    except DoesNotExist:
        return None


def fits_now(phone_number_id: str, pending: int) -> int | None:
    """How many of `pending` recipients the number's messaging limit lets through now (None: no limit)."""
    left = number_view(phone_number_id)["left"]
    return None if left is None else min(pending, left)


def accounts_of_numbers() -> dict[str, str | None]:
    """The business account each configured number names (None: it names none)."""
    return {item.phone_number_id: item.business_account_id for item in Number.listing.query(LIST_NUMBERS)}


def list_numbers() -> list[dict]:
    """The numbers their owners configured, oldest first, each as number_view shows it."""
    return [number_view(item.phone_number_id) for item in Number.listing.query(LIST_NUMBERS)]


def _reach(item: Number | None, phone_number_id: str, now: float, settings: Settings) -> dict:
    portfolio = (item.portfolio if item else None) or phone_number_id
    try:
        quota = Quota.get(*Quota.key(portfolio), consistent_read=True)
        hours = quota.hours.as_dict() if quota.hours else {}
    except DoesNotExist:
        hours = {}
    used, frees = used_and_next_room(hours, now, settings.messaging_window_seconds)
    limit = int(item.messaging_limit) if item and item.messaging_limit else None
    return {"messaging_limit": limit, "portfolio": portfolio, "reached_24h": used,
            "left": max(0, limit - used) if limit else None, "next_room_at": iso_utc(frees)}


def number_view(phone_number_id: str, now: float | None = None) -> dict:
    """The number's limit and the shards sending from it now, each with its ask and its share."""
    now = time.time() if now is None else now
    settings = config.settings()
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
        "secret": item.secret if item else None,  # its name: the token itself is never shown
        "business_account_id": item.business_account_id if item else None,
        "in_use_mps": round(sum(shares.values()), 2),
        "sending": [{"campaign_id": key.rsplit(":", 1)[0], "shard": int(key.rsplit(":", 1)[1]),
                     "asks_mps": round(asks[key], 2), "share_mps": round(shares[key], 2)}
                    for key in sorted(shares)],
        **_reach(item, phone_number_id, now, settings),
    }
