"""Every write of a campaign's status, and the start and close of its shards.

A status changes only here, by one conditional write whose condition is the set of statuses
`states.py` allows the change from: a person's action (`transition`), a campaign-fatal Graph error
(`pause_for_error`), or the last shard closing (`close_shard`). Shards start through `start_shard`,
which reserves the lease (`lease.hand_to`) and invokes the batch.

Each status write, and each change of the reason a sending campaign waits for (`wait_for`,
`stop_waiting`), is followed by one event of the campaign's history (`history.record`), here and
nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from . import history, invoker
from . import lease as leases
from .config import Settings
from .errors import Conflict
from .history import Kind
from .models import DUE_CAMPAIGN, DUE_SHARD, Campaign, Shard, write_if, write_if_returning_old
from .observability import Metric, count, logger
from .states import CAMPAIGN_ACTIONS, CAMPAIGN_TRANSITIONS, CampaignStatus
from .timestamps import now_iso
from .views import get_campaign


def _sources_of(target: CampaignStatus) -> frozenset[CampaignStatus]:
    return frozenset(src for src, targets in CAMPAIGN_TRANSITIONS.items() if target in targets)


def _write_while(campaign_id: str, sources: Iterable[CampaignStatus], actions: list,
                 condition=None) -> Campaign | None:
    """One conditional write of the campaign while its status is one of `sources`; None otherwise."""
    item = Campaign(*Campaign.key(campaign_id))
    allowed = Campaign.status.is_in(*[s.value for s in sources]) & Campaign.PK.exists()
    written = write_if(item, [Campaign.updated_at.set(now_iso()), *actions],
                       allowed if condition is None else allowed & condition, read_back=True)
    return item if written else None


def _write_status(campaign_id: str, sources: Iterable[CampaignStatus], target: CampaignStatus,
                  actions: list, condition=None) -> Campaign | None:
    """`target` from any of `sources`: a change the transition table allows, or None."""
    if not all(target in CAMPAIGN_TRANSITIONS[source] for source in sources):
        raise ValueError(f"states.py allows no change to {target} from each of {sorted(sources)}")
    return _write_while(campaign_id, sources, [Campaign.status.set(target.value), *actions], condition)


def _refused(campaign_id: str, what: str) -> Conflict:
    current = get_campaign(campaign_id)
    return Conflict(f"cannot {what} a campaign that is {current.status}", current_status=current.status)


# What each action of states.CAMPAIGN_ACTIONS leaves in the campaign's history.
ACTION_EVENTS = {"schedule": Kind.SCHEDULED, "send": Kind.STARTED, "pause": Kind.PAUSED, "resume": Kind.RESUMED,
                 "cancel": Kind.CANCELLED, "retry-failed": Kind.RETRIED}


def transition(campaign_id: str, action: str, extra_actions: list | None = None, condition=None, *,
               by: str = "person", cause: str | None = None, until: float | None = None) -> Campaign:
    """Apply a person's action (states.CAMPAIGN_ACTIONS); 409 with the current status if illegal
    (or if `condition`, a further one, does not hold). `by`, `cause`, `until`: its history event."""
    sources, target = CAMPAIGN_ACTIONS[action]
    item = _write_status(campaign_id, sources, target, list(extra_actions or []), condition)
    if item is None:
        raise _refused(campaign_id, action)
    history.record(campaign_id, ACTION_EVENTS[action], by, cause or f"{action} requested", until=until)
    return item


def update_while(campaign_id: str, sources: Iterable[CampaignStatus], what: str, actions: list) -> Campaign:
    """A write that needs the campaign in one of `sources` and changes no status (an import's
    commit); 409 with the current status otherwise."""
    item = _write_while(campaign_id, sources, actions)
    if item is None:
        raise _refused(campaign_id, what)
    return item


# Graph errors that mean Meta itself acted (a template paused or disabled for its quality, the spam
# limit, a restricted account): the pause is the provider's, and its event resumes it (provider_events).
PAUSED_BY_META = frozenset({132015, 132016, 131048, 368})


def pause_for_error(campaign_id: str, reason: str, code: int | None = None) -> bool:
    """A campaign-fatal Graph error: sending -> paused with the reason; False if it was not sending."""
    sources, target = CAMPAIGN_ACTIONS["pause"]
    reason = reason[:500]
    by = "provider" if code in PAUSED_BY_META else "error"
    paused = _write_status(campaign_id, sources, target,
                           [Campaign.paused_reason.set(reason), Campaign.last_error.set(reason),
                            Campaign.paused_by.set(by)])
    if paused is not None:
        history.record(campaign_id, Kind.PAUSED, by, reason, code=code)
    return paused is not None


def pause_for_provider(campaign_id: str, reason: str, until: float | None = None) -> bool:
    """Meta acted on its own (a template paused, an account restricted): sending or scheduled ->
    paused by the provider. `until`: when it goes on by itself (the DueIndex: recovery resumes it
    then); None: when the provider's event lifts it. False if it was neither sending nor scheduled."""
    due = ([Campaign.paused_until.set(until), Campaign.due_kind.set(DUE_CAMPAIGN), Campaign.due_at.set(until)]
           if until is not None else [Campaign.due_kind.remove(), Campaign.due_at.remove()])
    for source in (CampaignStatus.SENDING, CampaignStatus.SCHEDULED):  # which one: its resume goes back there
        paused = _write_status(campaign_id, (source,), CampaignStatus.PAUSED,
                               [Campaign.paused_reason.set(reason[:500]), Campaign.paused_by.set("provider"),
                                Campaign.paused_from.set(source.value), *due])
        if paused is not None:
            break
    if paused is not None:
        history.record(campaign_id, Kind.PAUSED, "provider", reason, until=until)
        leases.request_halt(campaign_id, range(int(paused.shard_count)))
    return paused is not None


def reschedule(campaign_id: str, send_at: float, paused_by: str, by: str, cause: str | None) -> Campaign:
    """A provider's pause of a campaign that never started ends: scheduled again for `send_at`
    (409 if it is no longer paused by `paused_by`). `by`, `cause`: its history event."""
    item = _write_status(campaign_id, (CampaignStatus.PAUSED,), CampaignStatus.SCHEDULED,
                         [Campaign.paused_reason.remove(), Campaign.paused_by.remove(), Campaign.paused_until.remove(),
                          Campaign.paused_from.remove(), Campaign.due_kind.set(DUE_CAMPAIGN),
                          Campaign.due_at.set(send_at)],
                         Campaign.paused_by == paused_by)
    if item is None:
        raise _refused(campaign_id, "resume")
    history.record(campaign_id, Kind.SCHEDULED, by, cause or "resume requested", until=send_at)
    return item


def halt_for_error(campaign_id: str, shard_count: int, reason: str, code: int | None, where: dict) -> None:
    """Pause the campaign for a campaign-fatal error and ask every shard's batch to look now."""
    if pause_for_error(campaign_id, reason, code):
        leases.request_halt(campaign_id, range(shard_count))
        count(Metric.CAMPAIGNS_PAUSED_FATAL)
        logger.error("campaign paused by a fatal Graph error", extra={**where, "reason": reason})


def wait_for(campaign_id: str, reason: str, until: float) -> None:
    """A sending campaign waits for a limit (the messaging limit, its send window): its status says why
    and until when. Every shard that parks writes it; only the one that changes the reason records it."""
    old = write_if_returning_old(Campaign, *Campaign.key(campaign_id),
                                 [Campaign.waiting_reason.set(reason), Campaign.waiting_until.set(until)],
                                 Campaign.status == CampaignStatus.SENDING)
    if old is not None and _text(old, "waiting_reason") != reason:
        history.record(campaign_id, Kind.WAITING, "system", reason, until=until)


def stop_waiting(campaign_id: str) -> None:
    """A batch starts sending again: the wait is over (recorded by the one batch that clears it)."""
    old = write_if_returning_old(Campaign, *Campaign.key(campaign_id),
                                 [Campaign.waiting_reason.remove(), Campaign.waiting_until.remove()],
                                 Campaign.waiting_reason.exists())
    if old is not None:
        history.record(campaign_id, Kind.WAITING_OVER, "system", _text(old, "waiting_reason") or "-")


def _text(attributes: dict, name: str) -> str | None:
    """A string attribute of an item in DynamoDB JSON (write_if_returning_old's answer)."""
    return (attributes.get(name) or {}).get("S")


def close_shard(campaign_id: str, shard: int) -> None:
    """The shard has nothing open: take it out of the campaign's open set; the last one completes it."""
    item = Campaign(*Campaign.key(campaign_id))
    item.update(actions=[Campaign.open_shards.delete({shard})])
    if item.open_shards:
        return
    completed = _write_status(
        campaign_id, _sources_of(CampaignStatus.COMPLETED), CampaignStatus.COMPLETED,
        [Campaign.completed_at.set(time.time())],
        condition=Campaign.open_shards.does_not_exist(),
    )
    if completed is not None:
        history.record(campaign_id, Kind.COMPLETED, "system", "every recipient settled")
        count(Metric.CAMPAIGNS_COMPLETED)
        logger.info("campaign completed", extra={"campaign_id": campaign_id})


def wake(campaign_id: str, shards: Iterable[int]) -> None:
    """Put shards in the due index now, so a crash before their batches start still gets them sent."""
    now = time.time()
    for shard in shards:
        # A finished shard stays out of the index (the condition fails): nothing to wake.
        write_if(Shard(*Shard.key(campaign_id, shard)), [Shard.due_kind.set(DUE_SHARD), Shard.due_at.set(now)],
                 Shard.finished_at.does_not_exist())


def start_shard(campaign_id: str, shard: int, settings: Settings, condition=None) -> bool:
    """Reserve a free (or expired) shard for a new batch and invoke it; False if it is held."""
    token = leases.new_token()
    condition = condition if condition is not None else leases.free_or_expired(time.time())
    if leases.hand_to(campaign_id, shard, token, condition, settings) is None:
        return False
    invoker.invoke_sender(settings, invoker.sender_event(campaign_id, shard, token))
    return True


def start_shards(campaign_id: str, shards: Iterable[int], settings: Settings) -> None:
    for shard in shards:
        start_shard(campaign_id, shard, settings)
