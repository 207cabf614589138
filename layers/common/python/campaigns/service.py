"""What the API does (its commands): create campaigns, import recipients, schedule, send, pause,
resume, cancel, retry failures. Its queries are `views`.

Every status change goes through `lifecycle` (one conditional write on the campaign item, checked
against the transition table in `states`); shard leases are only ever taken through `lease`.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from . import history, holds, imports, ledger, lifecycle
from . import lease as leases
from .config import Settings
from .errors import Conflict, ImportInProgress, NotFound, ServiceError, Unprocessable
from .graph_errors import ErrorClass, classify
from .lifecycle import start_shards, transition, wake
from .models import DUE_CAMPAIGN, Campaign, Recipient, Shard, recipient_place, recipient_sk, shard_pk
from .observability import logger
from .states import CAMPAIGN_ACTIONS, IMPORTABLE, CampaignStatus, InDoubtPolicy
from .states import RecipientStatus as R
from .timestamps import iso_utc, now_iso
from .views import committed_total, get_campaign

# The refusals callers catch as `service.<Error>` (the HTTP edge maps each to its answer).
__all__ = ["Conflict", "ImportInProgress", "NotFound", "ServiceError", "Unprocessable"]


@dataclass
class CampaignSpec:
    name: str
    phone_number_id: str
    template: dict
    rate: int = 80
    in_doubt_policy: str = InDoubtPolicy.AUTO
    send_at: float | None = None
    send_window: dict | None = None  # campaigns.windows: the hours it may send in
    expires_at: float | None = None  # no send starts after it; what is pending then ends expired
    api: str = "messages"  # whatsapp.SendApi: the Graph endpoint its sends go to


@dataclass
class RecipientRow:
    phone: str  # E.164 digits, already normalised
    variables: list[str] = field(default_factory=list)


def shard_count_for(rate: int, settings: Settings) -> int:
    return max(1, math.ceil(rate / settings.shard_rate))


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
        send_window=spec.send_window,
        expires_at=spec.expires_at,
        api=spec.api,
        created_at=now_iso(),
        updated_at=now_iso(),
    )
    if scheduled:
        campaign.due_kind, campaign.due_at = DUE_CAMPAIGN, spec.send_at
    campaign.save(condition=Campaign.PK.does_not_exist())
    if scheduled:
        history.record(campaign_id, history.Kind.SCHEDULED, "person", f"to start at {iso_utc(spec.send_at)}",
                       until=spec.send_at)
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

    `placed(import_id, [(phone, index), ...])` runs after the recipients are written and before
    the commit (import_recipients writes its number books there); index: models.recipient_place.
    """
    campaign = get_campaign(campaign_id)
    _require(campaign, IMPORTABLE, "import recipients into")
    if not rows:
        return 0
    import_id = uuid.uuid4().hex
    item = Campaign(*Campaign.key(campaign_id))
    item.update(actions=[Campaign.recipient_count.add(len(rows))])
    first = int(item.recipient_count) - len(rows)
    shards = int(campaign.shard_count)
    per_shard: dict[int, int] = {}
    positions: list[tuple[str, int]] = []
    items: list[Recipient] = []
    for offset, row in enumerate(rows):
        index = first + offset
        shard, seq = recipient_place(index, shards)
        per_shard[shard] = per_shard.get(shard, 0) + 1
        positions.append((row.phone, index))
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
    lifecycle.update_while(campaign_id, IMPORTABLE, "import recipients into", [Campaign.imports.add({import_id})])
    for shard, added in per_shard.items():
        Shard(*Shard.key(campaign_id, shard)).update(actions=[Shard.total.add(added)])
    return len(rows)


def _require(campaign: Campaign, allowed: Iterable[CampaignStatus], action: str) -> None:
    if campaign.status not in {s.value for s in allowed}:
        raise Conflict(f"cannot {action} a campaign that is {campaign.status}", current_status=campaign.status)


def _open_shards(campaign: Campaign) -> list[int]:
    return sorted(int(n) for n in (campaign.open_shards or set()))


def send(campaign_id: str, settings: Settings, by: str = "person", cause: str | None = None) -> Campaign:
    campaign = get_campaign(campaign_id)
    _require(campaign, CAMPAIGN_ACTIONS["send"][0], "send")
    if not int(campaign.recipient_count):
        raise ServiceError("the campaign has no recipients", field="recipients")
    shards = list(range(int(campaign.shard_count)))
    wake(campaign_id, shards)
    item = transition(
        campaign_id,
        "send",
        [
            Campaign.open_shards.set(set(shards)),
            Campaign.started_at.set(time.time()),
            Campaign.due_kind.remove(),
            Campaign.due_at.remove(),
        ],
        by=by, cause=cause,
    )
    start_shards(campaign_id, shards, settings)
    return item


def start_scheduled(campaign_id: str, settings: Settings) -> bool:
    """Recovery found a scheduled campaign whose time has come."""
    try:
        send(campaign_id, settings, by="system", cause="its scheduled time came")
        return True
    except ServiceError as error:
        logger.warning("scheduled campaign not started", extra={"campaign_id": campaign_id, "why": error.message})
        _out_of_due_index(campaign_id)
        return False


def _out_of_due_index(campaign_id: str) -> None:
    # Either way: a campaign that cannot start (or resume) must not be retried every tick.
    Campaign(*Campaign.key(campaign_id)).update(actions=[Campaign.due_kind.remove(), Campaign.due_at.remove()])


def pause(campaign_id: str, reason: str = "paused by request", by: str = "person") -> Campaign:
    """`by`: a person (the API), or the provider (a template event): only the provider's pauses are
    resumed by the provider's events."""
    return _halting(transition(campaign_id, "pause", [Campaign.paused_reason.set(reason[:500]),
                                                      Campaign.paused_by.set(by)], by=by, cause=reason))


def cancel(campaign_id: str) -> Campaign:
    return _halting(transition(campaign_id, "cancel", [Campaign.due_kind.remove(), Campaign.due_at.remove()]))


def _halting(campaign: Campaign) -> Campaign:
    """The status is written: ask the batches holding its shards to look at it now, not at their
    next periodic look (ShardBatch._renew_and_look)."""
    leases.request_halt(campaign.id, range(int(campaign.shard_count)))
    return campaign


def resume(campaign_id: str, settings: Settings, only_if_paused_by: str | None = None,
           cause: str | None = None, condition=None) -> Campaign:
    """Sending again: the status first, then the shards (see ShardBatch._restart_if_resumed).
    `only_if_paused_by`: an event resumes only the pauses of its own kind (never a person's); the
    resume is then that kind's (its history event's `by`), with the event as its `cause`.
    `condition`: a further one of the write (the provider's holds as an event read them). Every
    hold of the provider's goes with the resume: a person's resume overrides them."""
    campaign = get_campaign(campaign_id)
    _require(campaign, CAMPAIGN_ACTIONS["resume"][0], "resume")
    if only_if_paused_by and campaign.paused_by != only_if_paused_by:
        raise Conflict(f"campaign {campaign_id} was paused by {campaign.paused_by or 'a person'}",
                       current_status=campaign.status)
    by = only_if_paused_by or "person"
    if only_if_paused_by:
        paused_so = Campaign.paused_by == only_if_paused_by
        condition = paused_so if condition is None else paused_so & condition
    if campaign.paused_from == CampaignStatus.SCHEDULED and campaign.send_at is not None:
        return _resume_unstarted(campaign, settings, by, cause, condition)
    shards = _open_shards(campaign)
    wake(campaign_id, shards)
    item = transition(campaign_id, "resume", [Campaign.paused_reason.remove(), Campaign.paused_by.remove(),
                                              Campaign.paused_until.remove(), Campaign.paused_from.remove(),
                                              *holds.cleared(), Campaign.due_kind.remove(), Campaign.due_at.remove()],
                      condition, by=by, cause=cause)
    start_shards(campaign_id, shards, settings)
    return item


def _resume_unstarted(campaign: Campaign, settings: Settings, by: str, cause: str | None, condition) -> Campaign:
    """Paused by the provider while scheduled: scheduled again, and started now if its time has passed."""
    lifecycle.reschedule(campaign.id, float(campaign.send_at), campaign.paused_by or "", by, cause, condition)
    if float(campaign.send_at) <= time.time():
        start_scheduled(campaign.id, settings)
    return get_campaign(campaign.id)


def lift_holds(campaign_id: str, lifts, settings: Settings, cause: str) -> str:
    """The provider lifts the holds `lifts(hold, entry)` picks (campaigns.holds): the campaign resumes
    if none is left, "resumed"; stays paused for the others, "held"; "unchanged" if it had none of
    them or is not the provider's pause. Read, then written on the condition that the holds are
    still as read: an event that changed them meanwhile makes it read again."""
    for _ in range(lifecycle.HOLD_ATTEMPTS):
        campaign = get_campaign(campaign_id)
        current = holds.of(campaign)
        remaining = {key: entry for key, entry in current.items() if not lifts(key, entry)}
        if campaign.status != CampaignStatus.PAUSED or campaign.paused_by != "provider" or len(remaining) == len(current):
            return "unchanged"
        if remaining:
            if lifecycle.rewrite_holds(campaign_id, remaining, campaign.holds_version, cause, "provider"):
                return "held"
            continue
        try:
            resume(campaign_id, settings, only_if_paused_by="provider", cause=cause,
                   condition=holds.unchanged_since(campaign.holds_version))
            return "resumed"
        except Conflict:
            continue
    logger.error("a provider's holds not lifted: they kept changing", extra={"campaign_id": campaign_id, "cause": cause})
    return "unchanged"


def resume_when_due(campaign_id: str, settings: Settings, now: float | None = None) -> bool:
    """Recovery found a campaign in the DueIndex: a scheduled one whose time has come, or one the
    provider paused with a hold that has an end (an account restriction's expiration) now passed."""
    campaign = get_campaign(campaign_id)
    if not (campaign.status == CampaignStatus.PAUSED and campaign.paused_by == "provider"):
        return start_scheduled(campaign_id, settings)
    now = time.time() if now is None else now
    try:
        done = lift_holds(campaign_id, lambda _, entry: entry.get("until") is not None and float(entry["until"]) <= now,
                          settings, "the provider's restriction expired")
    except ServiceError as error:
        done = f"unchanged: {error.message}"
    if done.startswith("unchanged"):
        logger.warning("provider's pause not lifted", extra={"campaign_id": campaign_id, "why": done})
        _out_of_due_index(campaign_id)
    return done == "resumed"


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
    wake(campaign_id, shards)
    transition(campaign_id, "retry-failed", [Campaign.open_shards.add(set(shards))],
               cause=f"{sum(moved.values())} retryable failure(s) back to pending")
    start_shards(campaign_id, shards, settings)
    return len(reopened)


def _retryable(code: int | None) -> bool:
    return code is not None and classify(int(code)) in (
        ErrorClass.RETRYABLE, ErrorClass.RETRY_RECIPIENT, ErrorClass.THROTTLED
    )


# -- creating with recipients, importing, scheduling, listing (the HTTP API's use cases) ----------

# How far ahead a campaign may be scheduled.
MAX_SCHEDULE_SECONDS = 366 * 24 * 3600


def require_importable(campaign: Campaign) -> None:
    _require(campaign, IMPORTABLE, "import recipients into")


def schedule(campaign_id: str, send_at: float) -> Campaign:
    """draft → scheduled: recovery starts it at `send_at` (the DueIndex entry)."""
    return transition(
        campaign_id,
        "schedule",
        [Campaign.send_at.set(send_at), Campaign.due_kind.set(DUE_CAMPAIGN), Campaign.due_at.set(send_at)],
        cause=f"to start at {iso_utc(send_at)}", until=send_at,
    )


def check_send_at(send_at: float | None, now: float | None = None) -> None:
    if send_at is None:
        return
    now = time.time() if now is None else now
    if send_at <= now:
        raise Unprocessable("send_at must be in the future", field="send_at")
    if send_at > now + MAX_SCHEDULE_SECONDS:
        raise Unprocessable("send_at must be within a year", field="send_at")


def check_expires_at(expires_at: float | None, send_at: float | None, now: float | None = None) -> None:
    if expires_at is None:
        return
    now = time.time() if now is None else now
    if expires_at <= now:
        raise Unprocessable("expires_at must be in the future", field="expires_at")
    if send_at is not None and expires_at <= send_at:
        raise Unprocessable("expires_at must be after send_at", field="expires_at")


def create(spec: CampaignSpec, settings: Settings, recipients: imports.Parsed | None = None) -> tuple[str, dict | None]:
    """POST /campaigns: the campaign, its inline recipients (all valid, or nothing is written),
    then the schedule, in that order, so recovery never sees a scheduled campaign still
    being filled. Returns the id and the import report (None without recipients)."""
    check_send_at(spec.send_at)
    check_expires_at(spec.expires_at, spec.send_at)
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
            details={**report, "total": committed_total(campaign)},
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
                placed=lambda import_id, positions: imports.write_books(campaign_id, import_id, positions),
            )
    except imports.ImportBusy:
        raise ImportInProgress("another import of this campaign is running; retry when it is done") from None
    report.update(accepted=added, duplicates=repeats + len(already), suppressed=len(blocked))
    logger.info("recipients imported", extra={"campaign_id": campaign_id, **{k: v for k, v in report.items()
                                                                            if k != "rejected"}})
    return {**report, "total": committed_total(get_campaign(campaign_id))}


