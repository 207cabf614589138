"""The API's queries: a campaign's status and counts, the listings and their page tokens.

Reads only: counts come from the shard items (O(1) in the recipients), listings page through the
ListIndex and the shard partitions with opaque `next` tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable

from pynamodb.exceptions import DoesNotExist

from . import achieved, suppressions
from .config import Settings
from .errors import NotFound, Unprocessable
from .graph_errors import classify
from .models import LIST_CAMPAIGNS, LIST_SUPPRESSIONS, Campaign, Recipient, Shard, Suppression, shard_pk
from .states import (
    DELIVERY_COUNTERS,
    IN_DOUBT_COUNTERS,
    SETTLED_COUNTERS,
    STATUS_COUNTS,
    InDoubtPolicy,
    RecipientStatus,
)
from .timestamps import iso_utc

# DynamoDB pages (<= 1 MB each) one listing request reads at most.
MAX_LISTING_PAGES = 8


def get_campaign(campaign_id: str) -> Campaign:
    try:
        return Campaign.get(*Campaign.key(campaign_id), consistent_read=True)
    except DoesNotExist:
        raise NotFound(f"campaign {campaign_id} not found", field="id") from None


def campaign_status(campaign_id: str, settings: Settings) -> dict:
    """Counts from the shard items (one batch read of N shards), never a count over recipients."""
    campaign = get_campaign(campaign_id)
    shards = list(Shard.batch_get([Shard.key(campaign_id, n) for n in range(int(campaign.shard_count))]))
    now = time.time()
    counts = dict.fromkeys(STATUS_COUNTS, 0)
    resolved = dict.fromkeys(IN_DOUBT_COUNTERS, 0)
    for shard in shards:
        for name in (*SETTLED_COUNTERS, *DELIVERY_COUNTERS):
            counts[name] += int(getattr(shard, name) or 0)
        for name in IN_DOUBT_COUNTERS:
            resolved[name] += int(getattr(shard, name) or 0)
    total = sum(int(s.total or 0) for s in shards)
    done = sum(counts[name] for name in SETTLED_COUNTERS)
    counts["pending"] = max(0, total - done)
    stuck = [int(s.shard) for s in shards if s.lease_owner and s.lease_expires and s.lease_expires < now]
    live = [s for s in shards if _sending_now(s, now, settings)]
    rate = sum(float(s.achieved_rate or 0) for s in live)
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "phone_number_id": campaign.phone_number_id,
        "template": campaign.template,
        "rate": int(campaign.rate),
        "in_doubt_policy": campaign.in_doubt_policy,
        "api": campaign.api or "messages",
        "shards": int(campaign.shard_count),
        "total": total,
        "counts": counts,
        "in_doubt_resolution": {
            # Under skip an in-doubt recipient waits for nothing: it is finished as it is.
            "waiting_for_proof": 0 if campaign.in_doubt_policy == InDoubtPolicy.SKIP else counts["in_doubt"],
            "proven_sent": resolved["in_doubt_proven"],
            "resent_after_absence": resolved["resent_after_absence"],
            "duplicates": resolved["duplicates"],
        },
        "progress": round(done / total, 4) if total else 0.0,
        "current_rate": round(rate, 2),
        "pace": round(sum(float(s.pace or 0) for s in live), 2),
        # From what is being achieved, not from the pace: a slow provider or store stretches it.
        "eta_seconds": round(counts["pending"] / rate) if rate else None,
        "paused_reason": campaign.paused_reason,
        "paused_by": campaign.paused_by if campaign.status == "paused" else None,
        "paused_until": iso_utc(campaign.paused_until) if campaign.status == "paused" else None,
        "send_window": campaign.send_window,
        # Still sending, but waiting for a limit to free room (the messaging limit), and until when.
        "waiting_reason": campaign.waiting_reason if campaign.status == "sending" else None,
        "waiting_until": iso_utc(campaign.waiting_until) if campaign.status == "sending" else None,
        "last_error": campaign.last_error or next((s.last_error for s in shards if s.last_error), None),
        "stuck_shards": stuck,
        **_campaign_times(campaign),
    }


def _sending_now(shard: Shard, now: float, settings: Settings) -> bool:
    """A shard whose figures count: held by a batch that measured them recently (a dead batch's
    last figures stop counting once they are stale, before recovery has even noticed it)."""
    return bool(shard.lease_owner) and achieved.is_fresh(shard.measured_at, now, settings.heartbeat_seconds,
                                                          settings.clock_skew_seconds)


def _campaign_times(campaign: Campaign) -> dict:
    return {name: iso_utc(getattr(campaign, name)) for name in ("send_at", "expires_at", "created_at",
                                                                 "started_at", "completed_at")}


def committed_total(campaign: Campaign) -> int:
    """Recipients of the imports that finished, summed over the shard items."""
    keys = [Shard.key(campaign.id, n) for n in range(int(campaign.shard_count))]
    return sum(int(s.total or 0) for s in Shard.batch_get(keys))


def page_token(key: object) -> str | None:
    """An opaque `next` token for a position of a listing (None at the end)."""
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def read_page_token(token: str | None) -> object:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Unprocessable("next is not a token this API gave out", field="next") from None


def _is_key(value: object, names: set[str]) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == names
        and all(isinstance(v, dict) and len(v) == 1 and isinstance(next(iter(v.values())), str) for v in value.values())
    )


def campaign_summary(campaign: Campaign) -> dict:
    return {
        "id": campaign.id,
        "name": campaign.name,
        "status": campaign.status,
        "phone_number_id": campaign.phone_number_id,
        "template_name": (campaign.template or {}).get("name"),
        "rate": int(campaign.rate),
        "recipients_reserved": int(campaign.recipient_count or 0),
        "paused_reason": campaign.paused_reason,
        **_campaign_times(campaign),
    }


def _bounded_query(query: Callable[..., Iterable], model: type, limit: int, start: dict | None,
                   max_pages: int) -> tuple[list, dict | None, int]:
    """Up to `limit` items from `query(page_size=..., last_evaluated_key=...)`, one DynamoDB page at a time,
    the exact key to go on from (None at the end), and how many pages that took.

    Each page asks for at most the items still missing, so the key is always the end of a page; and at
    most MAX_LISTING_PAGES pages are read, so a sparse filter over a big partition answers a short page
    (with a key to go on) instead of reading the whole partition inside one API call.
    """
    items: list = []
    key = start
    read = 0
    while read < max_pages:
        pages = query(page_size=limit - len(items), last_evaluated_key=key).page_iter
        page = next(pages)
        read += 1
        items += [model.from_raw_data(raw) for raw in page.get("Items", [])]
        key = pages.last_evaluated_key
        if key is None or len(items) >= limit:
            break
    return items, key, read


def list_campaigns(status: str | None, limit: int, token: str | None) -> tuple[list[dict], str | None]:
    """Newest first from the ListIndex; with `status`, a page may hold fewer than `limit` (keep paging)."""
    start = read_page_token(token)
    if start is not None and not (_is_key(start, {"PK", "SK", "list_pk", "created_at"})
                                  and start["list_pk"].get("S") == LIST_CAMPAIGNS):
        raise Unprocessable("next is not a token this API gave out", field="next")
    found, key, _ = _bounded_query(
        lambda **page: Campaign.listing.query(
            LIST_CAMPAIGNS,
            scan_index_forward=False,
            filter_condition=(Campaign.status == status) if status else None,
            **page,
        ),
        Campaign,
        limit,
        start,
        max_pages=MAX_LISTING_PAGES,
    )
    return [campaign_summary(c) for c in found], page_token(key)


def list_suppressions(limit: int, token: str | None) -> tuple[list[dict], str | None]:
    """The suppression list, newest first, from the ListIndex."""
    start = read_page_token(token)
    if start is not None and not (_is_key(start, {"PK", "SK", "list_pk", "created_at"})
                                  and start["list_pk"].get("S") == LIST_SUPPRESSIONS):
        raise Unprocessable("next is not a token this API gave out", field="next")
    found, key, _ = _bounded_query(
        lambda **page: Suppression.listing.query(LIST_SUPPRESSIONS, scan_index_forward=False, **page),
        Suppression, limit, start, max_pages=MAX_LISTING_PAGES,
    )
    return [suppressions.view(item) for item in found], page_token(key)


def recipient_view(rec: Recipient) -> dict:
    code = int(rec.error_code) if rec.error_code is not None else None
    return {
        "key": rec.callback_key,
        "shard": rec.shard,
        "seq": rec.seq,
        "phone": rec.phone,
        "variables": list(rec.variables or []),
        "status": rec.status,
        "attempts": int(rec.attempts or 0),
        "wamid": rec.wamid,
        "error_code": code,
        "error_class": classify(code).value if code is not None else None,
        "error_message": rec.error_message,
        **{name: iso_utc(getattr(rec, name)) for name in ("sent_at", "delivered_at", "read_at", "failed_at",
                                                           "expired_at", "in_doubt_at", "proven_at",
                                                           "absent_proven_at", "duplicate_at")},
        "in_doubt": _in_doubt_state(rec),
    }


def _in_doubt_state(rec: Recipient) -> str | None:
    """What became of a send once in doubt (None for a recipient never in doubt)."""
    if rec.duplicate_at is not None:
        return "sent_twice"
    if rec.absent_proven_at is not None:
        return "resent_after_absence"
    if rec.proven_at is not None:
        return "proven_sent"
    if rec.status == RecipientStatus.IN_DOUBT:
        return "waiting_for_proof"
    return None


def list_recipients(
    campaign_id: str, status: RecipientStatus | str | None, limit: int, token: str | None
) -> tuple[list[dict], str | None]:
    """One shard partition after the other, in seq order; `next` names the shard and the key in it.

    A status filter is a DynamoDB filter over the shard (the owner's occasional read, not a
    hot path); recipients of an import that never committed do not exist and are left out.
    """
    campaign = get_campaign(campaign_id)
    shards = int(campaign.shard_count)
    committed = set(campaign.imports or ())
    first_shard, start = 0, None
    position = read_page_token(token)
    if position is not None:
        if not (isinstance(position, list) and len(position) == 2 and isinstance(position[0], int)
                and 0 <= position[0] < shards
                and (position[1] is None or (_is_key(position[1], {"PK", "SK"})
                                             and position[1]["PK"].get("S") == shard_pk(campaign_id, position[0])))):
            raise Unprocessable("next is not a token of this listing", field="next")
        first_shard, start = position
    items: list[dict] = []
    budget = MAX_LISTING_PAGES
    for shard in range(first_shard, shards):
        found, key, read = _bounded_query(
            lambda shard=shard, **page: Recipient.query(
                shard_pk(campaign_id, shard),
                Recipient.SK.startswith("R#"),
                filter_condition=(Recipient.status == str(status)) if status else None,
                **page,
            ),
            Recipient,
            limit - len(items),
            start if shard == first_shard else None,
            max_pages=budget,
        )
        budget -= read
        items += [recipient_view(r) for r in found if r.import_id in committed]
        if key is not None:
            return items, page_token([shard, key])
        if shard + 1 < shards and (len(items) >= limit or budget <= 0):
            return items, page_token([shard + 1, None])
    return items, None
