"""What the API does: create campaigns, import recipients, send, pause, resume, cancel, status.

Every state change is one conditional write on the campaign item, checked against the
transition table in `states`; shard leases are only ever taken through `lease`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import Condition

from . import achieved, imports, ledger
from . import lease as leases
from .config import Settings
from .graph_errors import ErrorClass, classify
from .models import DUE_CAMPAIGN, LIST_CAMPAIGNS, Campaign, Recipient, Shard, recipient_sk, shard_pk
from .observability import logger
from .sender import start_shard
from .states import CAMPAIGN_ACTIONS, CampaignStatus, RecipientStatus
from .states import RecipientStatus as R
from .timestamps import iso_utc, now_iso


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"

    def __init__(self, message: str, current_status: str | None = None):
        super().__init__(message)
        self.current_status = current_status


class Unprocessable(ServiceError):
    """The request is well-formed but its content cannot be accepted (422); `details` go into the answer."""

    status = 422
    code = "validation_error"

    def __init__(self, message: str, field: str | None = None, code: str | None = None,
                 details: dict | None = None):
        super().__init__(message, field)
        if code:
            self.code = code
        self.details = details or {}


class ImportInProgress(ServiceError):
    status = 409
    code = "import_in_progress"


@dataclass
class CampaignSpec:
    name: str
    phone_number_id: str
    template: dict
    rate: int = 80
    in_doubt_policy: str = "skip"
    send_at: float | None = None


@dataclass
class RecipientRow:
    phone: str  # E.164 digits, already normalised
    variables: list[str] = field(default_factory=list)


def shard_count_for(rate: int, settings: Settings) -> int:
    return max(1, math.ceil(rate / settings.shard_rate))


def get_campaign(campaign_id: str) -> Campaign:
    try:
        return Campaign.get(*Campaign.key(campaign_id), consistent_read=True)
    except DoesNotExist:
        raise NotFound(f"campaign {campaign_id} not found", field="id") from None


def create_campaign(spec: CampaignSpec, settings: Settings, campaign_id: str | None = None) -> Campaign:
    """Shards first, then the campaign item: a campaign never exists without its shards."""
    campaign_id = campaign_id or uuid.uuid4().hex[:16]
    shards = shard_count_for(spec.rate, settings)
    with Shard.batch_write() as batch:
        for n in range(shards):
            batch.save(Shard(*Shard.key(campaign_id, n), campaign_id=campaign_id, shard=n))
    scheduled = spec.send_at is not None
    campaign = Campaign(
        *Campaign.key(campaign_id),
        id=campaign_id,
        name=spec.name,
        phone_number_id=spec.phone_number_id,
        template=spec.template,
        rate=spec.rate,
        shard_count=shards,
        in_doubt_policy=spec.in_doubt_policy,
        status=(CampaignStatus.SCHEDULED if scheduled else CampaignStatus.DRAFT).value,
        send_at=spec.send_at,
        created_at=now_iso(),
        updated_at=now_iso(),
    )
    if scheduled:
        campaign.due_kind, campaign.due_at = DUE_CAMPAIGN, spec.send_at
    campaign.save(condition=Campaign.PK.does_not_exist())
    return campaign


def add_recipients(
    campaign_id: str,
    rows: list[RecipientRow],
    *,
    placed: Callable[[str, list[tuple[str, int, int]]], None] | None = None,
) -> int:
    """Append recipients, spread round-robin over the shards; returns how many were written.

    The index range is reserved with one atomic ADD, so concurrent imports never collide.
    Recipients carry their import's id and exist for senders only once that id is committed
    to the campaign at the end, so an import that dies half-way leaves nothing a send picks up.
    A campaign that is already sending cannot take imports (409).

    `placed(import_id, [(phone, shard, seq), ...])` runs after the recipients are written and
    before the commit (import_recipients writes its phone markers there).
    """
    campaign = get_campaign(campaign_id)
    _require(campaign, {CampaignStatus.DRAFT, CampaignStatus.SCHEDULED}, "import recipients")
    if not rows:
        return 0
    import_id = uuid.uuid4().hex
    item = Campaign(*Campaign.key(campaign_id))
    item.update(actions=[Campaign.recipient_count.add(len(rows))])
    first = int(item.recipient_count) - len(rows)
    shards = int(campaign.shard_count)
    per_shard: dict[int, int] = {}
    positions: list[tuple[str, int, int]] = []
    items: list[Recipient] = []
    for offset, row in enumerate(rows):
        index = first + offset
        shard, seq = index % shards, index // shards
        per_shard[shard] = per_shard.get(shard, 0) + 1
        positions.append((row.phone, shard, seq))
        items.append(
            Recipient(
                shard_pk(campaign_id, shard),
                recipient_sk(seq),
                phone=row.phone,
                variables=row.variables,
                import_id=import_id,
            )
        )
    imports.batch_save(items)  # BatchWriteItem, several calls at a time: invisible until the commit below
    if placed is not None:
        placed(import_id, positions)
    # The commit: from here on senders see this import. Totals come after; a crash between
    # the two leaves them low until the first batch's recount, never recipients half-visible.
    _transition_checked(campaign_id, {CampaignStatus.DRAFT, CampaignStatus.SCHEDULED}, "import recipients",
                        [Campaign.imports.add({import_id})])
    for shard, added in per_shard.items():
        Shard(*Shard.key(campaign_id, shard)).update(actions=[Shard.total.add(added)])
    return len(rows)


def _require(campaign: Campaign, allowed: Iterable[CampaignStatus], action: str) -> None:
    if campaign.status not in {s.value for s in allowed}:
        raise Conflict(f"cannot {action} a campaign that is {campaign.status}", current_status=campaign.status)


def _transition(campaign_id: str, action: str, extra_actions: list | None = None) -> Campaign:
    """Apply a person's action as one conditional write; 409 with the current status if illegal."""
    sources, target = CAMPAIGN_ACTIONS[action]
    return _transition_checked(
        campaign_id, sources, action, [Campaign.status.set(target.value), *(extra_actions or [])]
    )


def _transition_checked(
    campaign_id: str, sources: Iterable[CampaignStatus], action: str, actions: list
) -> Campaign:
    item = Campaign(*Campaign.key(campaign_id))
    condition: Condition = Campaign.status.is_in(*[s.value for s in sources])
    try:
        item.update(actions=[Campaign.updated_at.set(now_iso()), *actions], condition=condition & Campaign.PK.exists())
    except UpdateError as error:
        if not leases.conditional_failed(error):
            raise
        current = get_campaign(campaign_id)
        raise Conflict(f"cannot {action} a campaign that is {current.status}", current_status=current.status) from None
    return item


def _open_shards(campaign: Campaign) -> list[int]:
    return sorted(int(n) for n in (campaign.open_shards or set()))


def _wake(campaign_id: str, shards: Iterable[int]) -> None:
    """Put shards in the due index now, so a crash before their batches start still gets them sent."""
    now = time.time()
    for shard in shards:
        item = Shard(*Shard.key(campaign_id, shard))
        try:
            item.update(
                actions=[Shard.due_kind.set("shard"), Shard.due_at.set(now)],
                condition=Shard.finished_at.does_not_exist(),
            )
        except UpdateError as error:
            if not leases.conditional_failed(error):
                raise


def _start(campaign_id: str, shards: list[int], settings: Settings) -> None:
    for shard in shards:
        start_shard(campaign_id, shard, settings)


def send(campaign_id: str, settings: Settings) -> Campaign:
    campaign = get_campaign(campaign_id)
    _require(campaign, CAMPAIGN_ACTIONS["send"][0], "send")
    if not int(campaign.recipient_count):
        raise ServiceError("the campaign has no recipients", field="recipients")
    shards = list(range(int(campaign.shard_count)))
    _wake(campaign_id, shards)
    item = _transition(
        campaign_id,
        "send",
        [
            Campaign.open_shards.set(set(shards)),
            Campaign.started_at.set(time.time()),
            Campaign.due_kind.remove(),
            Campaign.due_at.remove(),
        ],
    )
    _start(campaign_id, shards, settings)
    return item


def start_scheduled(campaign_id: str, settings: Settings) -> bool:
    """Recovery found a scheduled campaign whose time has come."""
    try:
        send(campaign_id, settings)
        return True
    except ServiceError as error:
        logger.warning("scheduled campaign not started", extra={"campaign_id": campaign_id, "why": error.message})
        # Out of the due index either way: a campaign that cannot start must not be retried every tick.
        Campaign(*Campaign.key(campaign_id)).update(actions=[Campaign.due_kind.remove(), Campaign.due_at.remove()])
        return False


def pause(campaign_id: str) -> Campaign:
    return _halting(_transition(campaign_id, "pause", [Campaign.paused_reason.set("paused by request")]))


def cancel(campaign_id: str) -> Campaign:
    return _halting(_transition(campaign_id, "cancel", [Campaign.due_kind.remove(), Campaign.due_at.remove()]))


def _halting(campaign: Campaign) -> Campaign:
    """The status is written: ask the batches holding its shards to look at it now, not at their
    next periodic look (ShardBatch._renew_and_look)."""
    leases.request_halt(campaign.id, range(int(campaign.shard_count)))
    return campaign


def resume(campaign_id: str, settings: Settings) -> Campaign:
    """Sending again: the status first, then the shards (see ShardBatch._restart_if_resumed)."""
    campaign = get_campaign(campaign_id)
    _require(campaign, CAMPAIGN_ACTIONS["resume"][0], "resume")
    shards = _open_shards(campaign)
    _wake(campaign_id, shards)
    item = _transition(campaign_id, "resume", [Campaign.paused_reason.remove()])
    _start(campaign_id, shards, settings)
    return item


def retry_failed(campaign_id: str, settings: Settings) -> int:
    """Failures of a retryable class go back to pending and their shards reopen."""
    campaign = get_campaign(campaign_id)
    _require(campaign, CAMPAIGN_ACTIONS["retry-failed"][0], "retry failed recipients of")
    reopened: dict[int, int] = {}  # shard -> lowest seq reopened
    moved: Counter = Counter()  # shard -> recipients moved back to pending
    for shard in range(int(campaign.shard_count)):
        for rec in ledger.scan(campaign_id, shard):
            if rec.status == R.FAILED and _retryable(rec.error_code) and ledger.retry_failed(rec):
                reopened[shard] = min(reopened.get(shard, rec.seq), rec.seq)
                moved[shard] += 1
    if not reopened:
        return 0
    for shard, first_seq in reopened.items():
        # The campaign is completed, so no batch holds these shards: cursor and counters are ours.
        Shard(*Shard.key(campaign_id, shard)).update(
            actions=[Shard.finished_at.remove(), Shard.cursor.set(first_seq), Shard.failed.add(-moved[shard])]
        )
    shards = sorted(reopened)
    _wake(campaign_id, shards)
    _transition(campaign_id, "retry-failed", [Campaign.open_shards.add(set(shards))])
    _start(campaign_id, shards, settings)
    return len(reopened)


def _retryable(code: int | None) -> bool:
    return code is not None and classify(int(code)) in (
        ErrorClass.RETRYABLE, ErrorClass.RETRY_RECIPIENT, ErrorClass.THROTTLED
    )


def campaign_status(campaign_id: str, settings: Settings) -> dict:
    """Counts from the shard items (one batch read of N shards), never a count over recipients."""
    campaign = get_campaign(campaign_id)
    shards = list(Shard.batch_get([Shard.key(campaign_id, n) for n in range(int(campaign.shard_count))]))
    now = time.time()
    counts = {name: 0 for name in ("pending", "sending", "sent", "delivered", "read", "failed", "in_doubt",
                                   "skipped")}
    for shard in shards:
        for name in ("sent", "failed", "skipped", "in_doubt", "delivered", "read"):
            counts[name] += int(getattr(shard, name) or 0)
    total = sum(int(s.total or 0) for s in shards)
    done = counts["sent"] + counts["failed"] + counts["skipped"] + counts["in_doubt"]
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
        "shards": int(campaign.shard_count),
        "total": total,
        "counts": counts,
        "progress": round(done / total, 4) if total else 0.0,
        "current_rate": round(rate, 2),
        "pace": round(sum(float(s.pace or 0) for s in live), 2),
        # From what is being achieved, not from the pace: a slow provider or store stretches it.
        "eta_seconds": round(counts["pending"] / rate) if rate else None,
        "paused_reason": campaign.paused_reason,
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
    return {name: iso_utc(getattr(campaign, name)) for name in ("send_at", "created_at", "started_at",
                                                                 "completed_at")}


# -- creating with recipients, importing, scheduling, listing (the HTTP API's use cases) ----------

IMPORTABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED})
# How far ahead a campaign may be scheduled.
MAX_SCHEDULE_SECONDS = 366 * 24 * 3600
# DynamoDB pages (≤ 1 MB each) one listing request reads at most.
MAX_LISTING_PAGES = 8


def require_importable(campaign: Campaign) -> None:
    _require(campaign, IMPORTABLE, "import recipients into")


def schedule(campaign_id: str, send_at: float) -> Campaign:
    """draft → scheduled: recovery starts it at `send_at` (the DueIndex entry)."""
    return _transition(
        campaign_id,
        "schedule",
        [Campaign.send_at.set(send_at), Campaign.due_kind.set(DUE_CAMPAIGN), Campaign.due_at.set(send_at)],
    )


def check_send_at(send_at: float | None, now: float | None = None) -> None:
    if send_at is None:
        return
    now = time.time() if now is None else now
    if send_at <= now:
        raise Unprocessable("send_at must be in the future", field="send_at")
    if send_at > now + MAX_SCHEDULE_SECONDS:
        raise Unprocessable("send_at must be within a year", field="send_at")


def create(spec: CampaignSpec, settings: Settings, recipients: imports.Parsed | None = None) -> tuple[str, dict | None]:
    """POST /campaigns: the campaign, its inline recipients (all valid, or nothing is written),
    then the schedule, in that order, so recovery never sees a scheduled campaign still
    being filled. Returns the id and the import report (None without recipients)."""
    check_send_at(spec.send_at)
    if recipients is not None and recipients.rejected:
        raise Unprocessable(
            f"{len(recipients.rejected)} recipient(s) are invalid; nothing was created",
            field=recipients.first_rejection_field(),
            details={"rejected": recipients.rejected_report(), "rejected_count": len(recipients.rejected)},
        )
    if recipients is None or not recipients.rows:
        return create_campaign(spec, settings).id, None
    campaign = create_campaign(replace(spec, send_at=None), settings)
    report = import_recipients(campaign.id, recipients)
    if spec.send_at is not None:
        schedule(campaign.id, spec.send_at)
    return campaign.id, report


def import_recipients(campaign_id: str, parsed: imports.Parsed) -> dict:
    """Validated rows in; duplicates (within the request and the campaign) and suppressed numbers out.

    Raises Unprocessable (422, with the report) when no row passed validation: nothing is written.
    """
    campaign = get_campaign(campaign_id)
    require_importable(campaign)
    report = {
        "accepted": 0,
        "rejected": parsed.rejected_report(),
        "rejected_count": len(parsed.rejected),
        "duplicates": 0,
        "suppressed": 0,
    }
    if not parsed.rows:
        raise Unprocessable(
            "no valid recipient in the request; nothing was imported",
            field=parsed.first_rejection_field() if parsed.rejected else "recipients",
            code="no_valid_rows",
            details={**report, "total": _committed_total(campaign)},
        )
    unique, repeats = imports.dedupe(parsed.rows)
    try:
        with imports.import_lock(campaign_id):
            campaign = get_campaign(campaign_id)  # the imports committed before we held the lock
            require_importable(campaign)
            already = imports.imported(campaign_id, [r.phone for r in unique], set(campaign.imports or ()))
            fresh = [r for r in unique if r.phone not in already]
            blocked = imports.suppressed(r.phone for r in fresh)
            rows = [RecipientRow(phone=r.phone, variables=r.variables) for r in fresh if r.phone not in blocked]
            added = add_recipients(
                campaign_id,
                rows,
                placed=lambda import_id, positions: imports.write_markers(campaign_id, import_id, positions),
            )
    except imports.ImportBusy:
        raise ImportInProgress("another import of this campaign is running; retry when it is done") from None
    report.update(accepted=added, duplicates=repeats + len(already), suppressed=len(blocked))
    logger.info("recipients imported", extra={"campaign_id": campaign_id, **{k: v for k, v in report.items()
                                                                            if k != "rejected"}})
    return {**report, "total": _committed_total(get_campaign(campaign_id))}


def _committed_total(campaign: Campaign) -> int:
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
                                                           "in_doubt_at")},
    }


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
