"""What Meta does to a template on its own, told by webhook: campaigns that pause and go on by themselves.

Meta pauses a template whose quality drops (3 h the first time, 6 h the second) and disables it the
third time, and says so in a `message_template_status_update` change (`value: {event,
message_template_name, message_template_language, reason, other_info}`). Every campaign sending with
that template then pauses with `paused_by: "provider"` (its batches stop at their next heartbeat);
an `APPROVED` event whose `other_info.title` is `UNPAUSE`, or `REINSTATED`, resumes exactly those.
A campaign a person paused is never resumed by an event. Any other event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import service
from .config import Settings
from .errors import ServiceError
from .models import LIST_CAMPAIGNS, Campaign
from .observability import logger
from .states import CampaignStatus

PAUSING = frozenset({"PAUSED", "DISABLED"})
PAUSED_BY_PROVIDER = "provider"


def template_events_of(payload: object) -> list[dict]:
    """The `message_template_status_update` values of a webhook body."""
    found = []
    for entry in (payload.get("entry") or []) if isinstance(payload, dict) else []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            if isinstance(change, dict) and change.get("field") == "message_template_status_update" \
                    and isinstance(change.get("value"), dict):
                found.append(change["value"])
    return found


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
        for campaign in _campaigns_of(name, language, CampaignStatus.SENDING):
            done[campaign.id] = _pause(campaign.id, reason)
    else:
        cause = f"template {name} ({language}) {event}{' UNPAUSE' if event == 'APPROVED' else ''} by Meta"
        for campaign in _campaigns_of(name, language, CampaignStatus.PAUSED):
            if campaign.paused_by == PAUSED_BY_PROVIDER:
                done[campaign.id] = _resume(campaign.id, settings, cause)
    logger.info("template event applied", extra={"event": event, "template": name, "campaigns": done})
    return done


def _campaigns_of(name: str, language: str | None, status: CampaignStatus) -> Iterator[Campaign]:
    """The campaigns in `status` sending the template (rare events: a read of the campaigns' list)."""
    for campaign in Campaign.listing.query(LIST_CAMPAIGNS, filter_condition=Campaign.status == status.value):
        template = campaign.template or {}
        lang = template.get("language")
        lang = lang.get("code") if isinstance(lang, dict) else lang
        if template.get("name") == name and (language is None or lang == language):
            yield campaign


def _pause(campaign_id: str, reason: str) -> str:
    try:
        service.pause(campaign_id, reason=reason, by=PAUSED_BY_PROVIDER)
        return "paused"
    except ServiceError as refused:  # paused or finished meanwhile
        return f"unchanged: {refused}"


def _resume(campaign_id: str, settings: Settings, cause: str) -> str:
    try:
        service.resume(campaign_id, settings, only_if_paused_by=PAUSED_BY_PROVIDER, cause=cause)
        return "resumed"
    except ServiceError as refused:
        return f"unchanged: {refused}"
