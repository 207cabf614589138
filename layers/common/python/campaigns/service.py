"""What the API does: create campaigns, import recipients, send, pause, resume, cancel, status.

Every state change is one conditional write on the campaign item, checked against the
transition table in `states`; shard leases are only ever taken through `lease`.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import Condition

from . import lease as leases
from . import ledger
from .config import Settings
from .graph_errors import ErrorClass, classify
from .models import DUE_CAMPAIGN, Campaign, Recipient, Shard, recipient_sk, shard_pk
from .observability import logger
from .sender import start_shard
from .states import CAMPAIGN_ACTIONS, CampaignStatus
from .states import RecipientStatus as R


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


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec="milliseconds")


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
        created_at=_iso(),
        updated_at=_iso(),
    )
    if scheduled:
        campaign.due_kind, campaign.due_at = DUE_CAMPAIGN, spec.send_at
    campaign.save(condition=Campaign.PK.does_not_exist())
    return campaign


def add_recipients(campaign_id: str, rows: list[RecipientRow]) -> int:
    """Append recipients, spread round-robin over the shards; returns how many were written.

    The index range is reserved with one atomic ADD, so concurrent imports never collide.
    Recipients carry their import's id and exist for senders only once that id is committed
    to the campaign at the end, so an import that dies half-way leaves nothing a send picks up.
    A campaign that is already sending cannot take imports (409).
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
    with Recipient.batch_write() as batch:
        for offset, row in enumerate(rows):
            index = first + offset
            shard, seq = index % shards, index // shards
            per_shard[shard] = per_shard.get(shard, 0) + 1
            batch.save(
                Recipient(
                    shard_pk(campaign_id, shard),
                    recipient_sk(seq),
                    phone=row.phone,
                    variables=row.variables,
                    import_id=import_id,
                )
            )
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
        item.update(actions=[Campaign.updated_at.set(_iso()), *actions], condition=condition & Campaign.PK.exists())
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
    return _transition(campaign_id, "pause", [Campaign.paused_reason.set("paused by request")])


def cancel(campaign_id: str) -> Campaign:
    return _transition(campaign_id, "cancel", [Campaign.due_kind.remove(), Campaign.due_at.remove()])


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
    reopened: dict[int, int] = {}
    for shard in range(int(campaign.shard_count)):
        for rec in ledger.scan(campaign_id, shard):
            if rec.status == R.FAILED and _retryable(rec.error_code) and ledger.retry_failed(rec):
                reopened[shard] = min(reopened.get(shard, rec.seq), rec.seq)
    if not reopened:
        return 0
    for shard, first_seq in reopened.items():
        Shard(*Shard.key(campaign_id, shard)).update(
            actions=[Shard.finished_at.remove(), Shard.cursor.set(first_seq)]
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
    rate = sum(float(s.current_rate or 0) for s in shards if s.lease_owner)
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
        "eta_seconds": round(counts["pending"] / rate) if rate else None,
        "paused_reason": campaign.paused_reason,
        "last_error": campaign.last_error or next((s.last_error for s in shards if s.last_error), None),
        "stuck_shards": stuck,
        "send_at": campaign.send_at,
        "created_at": campaign.created_at,
        "started_at": campaign.started_at,
        "completed_at": campaign.completed_at,
    }
