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

from . import history, holds, invoker
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
# limit, a policy block): the pause is the provider's, with the hold the code stands for (campaigns.holds).
PAUSED_BY_META = frozenset({132015, 132016, 131048, 368})
HOLD_ATTEMPTS = 20  # reads and conditional writes of a hold map that events change at the same time


def pause_for_error(campaign_id: str, reason: str, code: int | None = None, template: dict | None = None) -> bool:
    """A campaign-fatal Graph error: sending -> paused with the reason; False if it was not sending.
    One of Meta's own codes is the provider's pause, with the hold it stands for (`template`: the
    campaign's, for a template's code)."""
    reason = reason[:500]
    if code in PAUSED_BY_META:
        return _hold(campaign_id, holds.for_code(template, code), reason, None, (CampaignStatus.SENDING,),
                     [Campaign.last_error.set(reason)], code) == "paused"
    sources, target = CAMPAIGN_ACTIONS["pause"]
    paused = _write_status(campaign_id, sources, target, [Campaign.paused_reason.set(reason),
                                                          Campaign.last_error.set(reason), Campaign.paused_by.set("error")])
    if paused is not None:
        history.record(campaign_id, Kind.PAUSED, "error", reason, code=code)
    return paused is not None


def pause_for_provider(campaign_id: str, hold: str, reason: str, until: float | None = None) -> str:
    """Meta acted on its own (a template paused, an account restricted): sending or scheduled ->
    paused by the provider with `hold` (campaigns.holds), and its batches asked to look now:
    "paused"; or one more hold on a campaign the provider had paused already, "held"; "unchanged"
    otherwise (a person's pause, a hold it has already). `until`: when the hold lifts by itself
    (recovery lifts it then)."""
    done = _hold(campaign_id, hold, reason[:500], until, (CampaignStatus.SENDING, CampaignStatus.SCHEDULED))
    if done == "paused":
        leases.request_halt(campaign_id, range(int(get_campaign(campaign_id).shard_count)))
    return done


def _hold(campaign_id: str, hold: str, reason: str, until: float | None, sources: Iterable[CampaignStatus],
          extra: list | None = None, code: int | None = None) -> str:
    entry = {hold: holds.hold(reason, until)}
    for _ in range(HOLD_ATTEMPTS):
        for source in sources:  # which one: its resume goes back there
            if _write_status(campaign_id, (source,), CampaignStatus.PAUSED,
                             [Campaign.paused_by.set("provider"), Campaign.paused_from.set(source.value),
                              *holds.written(entry), *(extra or [])]) is not None:
                history.record(campaign_id, Kind.PAUSED, "provider", reason, until=until, code=code)
                return "paused"
        campaign = get_campaign(campaign_id)
        if campaign.status in sources:
            continue  # its last hold lifted since: pause it again
        current = holds.of(campaign)
        if campaign.status != CampaignStatus.PAUSED or campaign.paused_by != "provider" or current.get(hold) == entry[hold]:
            return "unchanged"
        if _write_while(campaign_id, (CampaignStatus.PAUSED,), holds.written({**current, **entry}),
                        (Campaign.paused_by == "provider") & holds.unchanged_since(campaign.holds_version)):
            history.record(campaign_id, Kind.PAUSED, "provider", reason, until=until, code=code)
            return "held"
    logger.error("a provider's hold not written: its holds kept changing", extra={"campaign_id": campaign_id, "hold": hold})
    return "unchanged"


def rewrite_holds(campaign_id: str, remaining: dict, version: int | None, cause: str, by: str) -> bool:
    """Some of a provider's holds lifted, others remain: the campaign stays paused for those (False if
    its holds changed since they were read at `version`)."""
    if _write_while(campaign_id, (CampaignStatus.PAUSED,), holds.written(remaining),
                    (Campaign.paused_by == "provider") & holds.unchanged_since(version)) is None:
        return False
    still = "; ".join(remaining[key]["reason"] for key in sorted(remaining))
    history.record(campaign_id, Kind.PAUSED, by, f"{cause}; still paused: {still}"[:500])
    return True


def reschedule(campaign_id: str, send_at: float, paused_by: str, by: str, cause: str | None,
               condition=None) -> Campaign:
    """A provider's pause of a campaign that never started ends: scheduled again for `send_at`
    (409 if it is no longer paused by `paused_by`, or `condition` fails). `by`, `cause`: its history event."""
    paused_so = Campaign.paused_by == paused_by
    item = _write_status(campaign_id, (CampaignStatus.PAUSED,), CampaignStatus.SCHEDULED,
                         [Campaign.paused_reason.remove(), Campaign.paused_by.remove(), Campaign.paused_until.remove(),
                          Campaign.paused_from.remove(), *holds.cleared(), Campaign.due_kind.set(DUE_CAMPAIGN),
                          Campaign.due_at.set(send_at)],
                         paused_so if condition is None else paused_so & condition)
    if item is None:
        raise _refused(campaign_id, "resume")
    history.record(campaign_id, Kind.SCHEDULED, by, cause or "resume requested", until=send_at)
    return item


def halt_for_error(campaign_id: str, shard_count: int, reason: str, code: int | None, where: dict,
                   template: dict | None = None) -> None:
    """Pause the campaign for a campaign-fatal error and ask every shard's batch to look now."""
    if pause_for_error(campaign_id, reason, code, template):
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
