"""A campaign's history: every start, pause, resume, wait, completion..., with its cause and time.

`lifecycle` records one event next to each status write it makes (and each change of a wait's
reason); the API reads them back (`GET /campaigns/{id}/events`). An event is one write of a new
item in the campaign's own partition (models.CampaignEvent: `SK = EVENT#<epoch ms>#<random>`, so a
Query with begins_with reads them in time order), written after the status it tells of, never per
message. The write is an UpdateItem that creates the item, not a PutItem (the same one write unit):
recovery, which starts scheduled campaigns, is allowed UpdateItem on the table and no PutItem.

A history write never fails the action it tells of: the status is written already, and a pause
that answered 500 for want of its history line would be retried against a paused campaign. A
failed write is logged and counted (`HistoryWritesFailed`), and that event is missing.
Events live 90 days (`KEEP_SECONDS`, the table's TTL attribute `expires_at`).
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum

from .errors import Unprocessable
from .models import EVENT_PREFIX, CampaignEvent, campaign_pk, update_without_read_back
from .observability import Metric, count_now, logger
from .timestamps import iso_utc
from .views import page_token, read_page_token

KEEP_SECONDS = 90 * 24 * 3600


class Kind(StrEnum):
    STARTED = "started"  # send (a person, or recovery at the schedule's time)
    SCHEDULED = "scheduled"
    PAUSED = "paused"  # a person, the provider (a template event, a code of Meta's own), a fatal error
    RESUMED = "resumed"
    WAITING = "waiting"  # still sending, its shards parked: the messaging limit, outside the send window
    WAITING_OVER = "waiting_over"  # a batch started again and cleared the wait
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    RETRIED = "retried"  # retry-failed reopened a completed campaign


BY = ("person", "provider", "error", "system")


def record(campaign_id: str, kind: Kind | str, by: str, cause: str, until: float | None = None,
           code: int | None = None) -> None:
    """One event, one write; a store error is logged and counted, never raised."""
    try:
        at_ms = round(time.time() * 1000)
        item = CampaignEvent(*CampaignEvent.key(campaign_id, at_ms, secrets.token_hex(3)))
        actions = [CampaignEvent.kind.set(str(kind)), CampaignEvent.by.set(by),
                   CampaignEvent.cause.set((cause or "")[:500] or "-"), CampaignEvent.at.set(at_ms / 1000),
                   CampaignEvent.expires_at.set(at_ms // 1000 + KEEP_SECONDS)]
        actions += [CampaignEvent.until.set(until)] if until is not None else []
        actions += [CampaignEvent.code.set(int(code))] if code is not None else []
        update_without_read_back(item, actions, CampaignEvent.PK.does_not_exist())
    except Exception:  # any failure at all: the status write it tells of happened
        count_now(Metric.HISTORY_WRITES_FAILED)
        logger.exception("history event not written",
                         extra={"campaign_id": campaign_id, "kind": str(kind), "by": by})


def event_view(event: CampaignEvent) -> dict:
    return {
        "at": iso_utc(event.at),
        "kind": event.kind,
        "by": event.by,
        "cause": event.cause,
        "until": iso_utc(event.until),
        "code": int(event.code) if event.code is not None else None,
    }


def events(campaign_id: str, limit: int, token: str | None = None,
           newest_first: bool = False) -> tuple[list[dict], str | None]:
    """A page of the campaign's events in time order (or the newest first), and the `next` token
    of the following page (None at the end). One Query of its partition; the campaign is not read."""
    start = read_page_token(token)
    pk = campaign_pk(campaign_id)
    if start is not None and not _is_event_key(start, pk):
        raise Unprocessable("next is not a token of this listing", field="next")
    found = CampaignEvent.query(pk, CampaignEvent.SK.startswith(EVENT_PREFIX), scan_index_forward=not newest_first,
                                limit=limit, last_evaluated_key=start, consistent_read=True)
    items = [event_view(e) for e in found]
    return items, page_token(found.last_evaluated_key if len(items) == limit else None)


def _is_event_key(key: object, pk: str) -> bool:
    return (isinstance(key, dict) and set(key) == {"PK", "SK"}
            and key["PK"] == {"S": pk} and isinstance(key["SK"], dict) and set(key["SK"]) == {"S"}
            and isinstance(key["SK"]["S"], str) and key["SK"]["S"].startswith(EVENT_PREFIX))
