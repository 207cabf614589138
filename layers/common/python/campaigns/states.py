"""Campaign and recipient state machines: every allowed transition, in one place."""

from __future__ import annotations

from enum import StrEnum


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RecipientStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a batch; its POST may be on the wire
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    IN_DOUBT = "in_doubt"  # claimed by a batch that died: sent or not, nobody knows yet
    EXPIRED = "expired"  # still pending when its campaign's expires_at passed: never sent


C, R = CampaignStatus, RecipientStatus

CAMPAIGN_TRANSITIONS: dict[CampaignStatus, frozenset[CampaignStatus]] = {
    C.DRAFT: frozenset({C.SCHEDULED, C.SENDING, C.CANCELLED}),
    # paused: Meta paused its template, or restricted its account, before it started.
    C.SCHEDULED: frozenset({C.SENDING, C.DRAFT, C.PAUSED, C.CANCELLED}),
    C.SENDING: frozenset({C.PAUSED, C.COMPLETED, C.CANCELLED}),
    # scheduled: Meta's pause of a campaign that had not started yet is over before its send_at.
    C.PAUSED: frozenset({C.SENDING, C.SCHEDULED, C.CANCELLED}),
    # retry-failed reopens a finished campaign.
    C.COMPLETED: frozenset({C.SENDING}),
    C.CANCELLED: frozenset(),
}

RECIPIENT_TRANSITIONS: dict[RecipientStatus, frozenset[RecipientStatus]] = {
    # claim; skipped (its number opted out since import); expired (its campaign's expires_at passed)
    R.PENDING: frozenset({R.SENDING, R.SKIPPED, R.EXPIRED}),
    # checkpoint after the response; back to pending for a retry that was never sent;
    # in doubt when its claimer died; sent when a webhook proves the send of a dead claimer
    R.SENDING: frozenset({R.SENT, R.FAILED, R.PENDING, R.IN_DOUBT}),
    # a failed status webhook after the send was accepted
    R.SENT: frozenset({R.FAILED}),
    # retry-failed (retryable codes only)
    R.FAILED: frozenset({R.PENDING}),
    R.SKIPPED: frozenset(),
    R.EXPIRED: frozenset(),
    # a webhook proves the send; or policy `resend` after the grace period
    R.IN_DOUBT: frozenset({R.SENT, R.FAILED, R.PENDING}),
}

# What a person may ask of a campaign, and the statuses it may be asked in.
CAMPAIGN_ACTIONS: dict[str, tuple[frozenset[CampaignStatus], CampaignStatus]] = {
    "schedule": (frozenset({C.DRAFT}), C.SCHEDULED),
    "send": (frozenset({C.DRAFT, C.SCHEDULED}), C.SENDING),
    "pause": (frozenset({C.SENDING}), C.PAUSED),
    "resume": (frozenset({C.PAUSED}), C.SENDING),
    "cancel": (frozenset({C.DRAFT, C.SCHEDULED, C.SENDING, C.PAUSED}), C.CANCELLED),
    # Once the campaign has finished: no batch then holds a shard whose cursor and counters the
    # reopening rewrites (a paused campaign is resumed first, and retried when it completes).
    "retry-failed": (frozenset({C.COMPLETED}), C.SENDING),
}

TERMINAL_RECIPIENT = frozenset({R.SENT, R.FAILED, R.SKIPPED, R.IN_DOUBT, R.EXPIRED})
class InDoubtPolicy(StrEnum):
    """What happens to a recipient whose send may or may not have reached Meta (invariant 3)."""

    # The default: sent again only on proof of absence, i.e. once status webhooks have proven later
    # sends of the same number and none came for it (campaigns.proof); never while they are silent.
    AUTO = "auto"
    SKIP = "skip"  # strict at most once: never sent again unless a webhook proves it was
    RESEND = "resend"  # at least once: sent again once the grace period passed without proof


# The statuses a campaign takes imports in (once it is sending, its shards are being walked).
IMPORTABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED})
# The statuses a campaign may be test-sent in (campaigns.test_sends): before it sends, or while paused.
TESTABLE = frozenset({CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED})

# The counters a shard item keeps (models.Shard): one per status a recipient ends in, and the
# deliveries its status webhooks report. A campaign's status answers these and pending/sending.
SETTLED_COUNTERS = ("sent", "failed", "skipped", "in_doubt", "expired")
DELIVERY_COUNTERS = ("delivered", "read")
STATUS_COUNTS = ("pending", "sending", "sent", "delivered", "read", "failed", "in_doubt", "skipped", "expired")
# How in-doubt sends were resolved, by the recipient flag each counts (models.Recipient): proven
# sent by a webhook, sent again after proof of absence, and both sends happened after all.
IN_DOUBT_COUNTERS = {"in_doubt_proven": "proven_at", "resent_after_absence": "absent_proven_at",
                     "duplicates": "duplicate_at"}

# Recipients still owed work: a campaign is completed exactly when none is left.
OPEN_RECIPIENT = frozenset({R.PENDING, R.SENDING})


def campaign_can(src: CampaignStatus, dst: CampaignStatus) -> bool:
    return dst in CAMPAIGN_TRANSITIONS[src]


def recipient_can(src: RecipientStatus, dst: RecipientStatus) -> bool:
    return dst in RECIPIENT_TRANSITIONS[src]


def sources_of(dst: RecipientStatus) -> frozenset[RecipientStatus]:
    """The statuses a recipient may move to `dst` from: the condition of that write."""
    return frozenset(src for src, dsts in RECIPIENT_TRANSITIONS.items() if dst in dsts)
