"""What Meta does on its own, told by webhook: campaigns that pause and go on by themselves.

Templates: Meta pauses a template whose quality drops (3 h the first time, 6 h the second) and
disables it the third time, and says so in a `message_template_status_update` change (`value:
{event, message_template_name, message_template_language, reason, other_info}`). Every campaign
sending or scheduled with that template then pauses with `paused_by: "provider"` (its batches stop
at their next heartbeat), and one the provider had paused already for another cause takes this one
too; an `APPROVED` event whose `other_info.title` is `UNPAUSE`, or `REINSTATED`, lifts that cause.

Accounts: an `account_update` change with event `ACCOUNT_RESTRICTION` and a `restriction_info`
entry of type `RESTRICTED_BIZ_INITIATED_MESSAGING` pauses the campaigns of that account's numbers
(the change's `entry.id`; a number names its account in `PUT /numbers/{id}`, one that names none is
taken to belong to any) until the restriction's `expiration`: recovery lifts it then.

Each cause is a hold of its own (campaigns.holds): a campaign goes on when its last hold lifts. A
campaign a person paused is never paused again nor resumed by an event. Any other event changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from . import holds, lifecycle, numbers, service
from .config import Settings
from .errors import ServiceError
from .models import LIST_CAMPAIGNS, Campaign
from .observability import logger
from .states import CampaignStatus
from .timestamps import iso_utc

PAUSING = frozenset({"PAUSED", "DISABLED"})
# The restriction that stops template campaigns (others stop replies, or adding numbers).
BUSINESS_INITIATED = "RESTRICTED_BIZ_INITIATED_MESSAGING"
# Sending or scheduled: paused; paused by the provider already: one more hold (lifecycle.pause_for_provider).
HOLDABLE = (CampaignStatus.SENDING, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED)


def changes_of(payload: object, field: str) -> list[tuple[str, dict]]:
    """The (entry id, value) of every change of a webhook body that names `field`."""
    found = []
    for entry in (payload.get("entry") or []) if isinstance(payload, dict) else []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            if isinstance(change, dict) and change.get("field") == field and isinstance(change.get("value"), dict):
                found.append((str(entry.get("id") or ""), change["value"]))
    return found


def apply_all(payload: object, settings: Settings) -> dict:
    """Every template and account event of a verified webhook body; what was done, by campaign."""
    done = {}
    for _, value in changes_of(payload, "message_template_status_update"):
        done.update(apply_template_event(value, settings))
    for account_id, value in changes_of(payload, "account_update"):
        done.update(apply_account_event(account_id, value))
    return done


def apply_template_event(value: dict, settings: Settings) -> dict:
    """Pause or resume the campaigns of the event's template; what was done, by campaign."""
    event = str(value.get("event") or "").upper()
    name, language = value.get("message_template_name"), value.get("message_template_language")
    other = value.get("other_info") if isinstance(value.get("other_info"), dict) else {}
    unpause = event == "REINSTATED" or (event == "APPROVED" and str(other.get("title") or "").upper() == "UNPAUSE")
    if not name or not (event in PAUSING or unpause):
        logger.info("template event: nothing to do", extra={"event": event, "template": name})
        return {}
    done = {}
    if event in PAUSING:
        reason = f"template {name} ({language}) {event} by Meta: {value.get('reason') or 'no reason given'}"
        hold = holds.template_hold(name, language)
        for campaign in _campaigns(HOLDABLE, lambda c: _sends_template(c, name, language)):
            done[campaign.id] = lifecycle.pause_for_provider(campaign.id, hold, reason)
    else:
        cause = f"template {name} ({language}) {event}{' UNPAUSE' if event == 'APPROVED' else ''} by Meta"
        for campaign in _campaigns((CampaignStatus.PAUSED,), lambda c: _sends_template(c, name, language)):
            done[campaign.id] = _lift(campaign.id, lambda key, _: holds.is_template_hold(key, name, language),
                                      settings, cause)
    logger.info("template event applied", extra={"event": event, "template": name, "campaigns": done})
    return done


def apply_account_event(account_id: str, value: dict, now: float | None = None) -> dict:
    """Pause the campaigns of a restricted account's numbers until the restriction's expiration."""
    now = time.time() if now is None else now
    event = str(value.get("event") or "").upper()
    until = restriction_end(value)
    if event != "ACCOUNT_RESTRICTION" or until is None or until <= now:
        logger.info("account event: nothing to do", extra={"event": event, "account": account_id})
        return {}
    reason = f"account {account_id} restricted by Meta from business-initiated messaging until {iso_utc(until)}"
    accounts = numbers.accounts_of_numbers()
    hold = holds.account_hold(account_id)
    done = {campaign.id: lifecycle.pause_for_provider(campaign.id, hold, reason, until)
            for campaign in _campaigns(HOLDABLE, lambda c: accounts.get(c.phone_number_id) in (None, account_id))}
    logger.info("account event applied", extra={"event": event, "account": account_id, "campaigns": done})
    return done


def restriction_end(value: dict) -> float | None:
    """When the account's business-initiated messaging restriction ends (epoch seconds); None if the
    event names none. Meta writes `expiration` as ISO 8601 (`2026-04-19T13:59:20+0000`)."""
    ends = []
    for restriction in value.get("restriction_info") or []:
        if isinstance(restriction, dict) and restriction.get("restriction_type") == BUSINESS_INITIATED:
            ends.append(_moment(restriction.get("expiration")))
    ends = [end for end in ends if end is not None]
    return max(ends) if ends else None


def _moment(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _sends_template(campaign: Campaign, name: str, language: str | None) -> bool:
    template = campaign.template or {}
    lang = template.get("language")
    lang = lang.get("code") if isinstance(lang, dict) else lang
    return template.get("name") == name and (language is None or lang == language)


def _campaigns(statuses, matches) -> Iterator[Campaign]:
    """The campaigns in one of `statuses` that `matches` (rare events: a read of the campaigns' list)."""
    condition = Campaign.status.is_in(*[s.value for s in statuses])
    for campaign in Campaign.listing.query(LIST_CAMPAIGNS, filter_condition=condition):
        if matches(campaign):
            yield campaign


def _lift(campaign_id: str, lifts, settings: Settings, cause: str) -> str:
    try:
        return service.lift_holds(campaign_id, lifts, settings, cause)
    except ServiceError as refused:
        return f"unchanged: {refused}"
