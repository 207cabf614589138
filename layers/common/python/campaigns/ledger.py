"""Claim and checkpoint of recipients: one conditional write each, so only one claimer can win.

Per message the sender writes exactly twice: `claim` (pending -> sending, naming the batch)
before its POST and one checkpoint after the response. A checkpoint is conditioned on the
claim still being the batch's own: once a takeover has settled an orphaned claim, a late
write of the old holder fails instead of overwriting what the new holder decided.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from .models import Recipient, recipient_sk, shard_pk, write_if
from .states import IN_DOUBT_COUNTERS
from .states import RecipientStatus as R

LAST_SEQ = 10**9 - 1
SCAN_PAGE = 1000  # recipients per Query page of a shard's scan (well under 1 MB of items)


def _claimed_by(owner: str):
    return (Recipient.status == R.SENDING.value) & (Recipient.claimed_by == owner)


def claim(rec: Recipient, owner: str, now: float) -> bool:
    """Take a pending recipient for `owner`'s send; False if it is not pending (or not yet due).

    Idempotent for its owner: botocore retries a call whose answer was lost (a timeout, a 500),
    and a retry that finds the recipient already claimed by this very batch must win too. That
    batch has not sent it (the claim's answer never reached it); read as refused, the claim
    would stay behind unsent and end in doubt.
    """
    return write_if(
        rec,
        [
            Recipient.status.set(R.SENDING.value),
            Recipient.claimed_by.set(owner),
            Recipient.claimed_at.set(now),
        ],
        (
            (Recipient.status == R.PENDING.value)
            & (Recipient.not_before.does_not_exist() | (Recipient.not_before <= now))
        )
        | _claimed_by(owner),
    )


def mark_sent(rec: Recipient, owner: str, wamid: str, now: float) -> bool:
    """Checkpoint an accepted send; False if the claim is gone or a `failed` status came first.

    Meta can report a delivery failure before our checkpoint lands (the webhook records it and
    leaves the status alone): the caller then checkpoints `failed` with the recorded code.
    Idempotent like `claim`: a retry that finds this very checkpoint in place wins.
    """
    return write_if(
        rec,
        [Recipient.status.set(R.SENT.value), Recipient.wamid.set(wamid), Recipient.sent_at.set(now)],
        (_claimed_by(owner) & Recipient.failed_at.does_not_exist())
        | ((Recipient.status == R.SENT.value) & (Recipient.claimed_by == owner) & (Recipient.wamid == wamid)),
    )


def mark_failed(rec: Recipient, owner: str, code: int, message: str, now: float) -> bool:
    return write_if(
        rec,
        [
            Recipient.status.set(R.FAILED.value),
            Recipient.error_code.set(code),
            Recipient.error_message.set(message[:500]),
            Recipient.failed_at.set(now),
        ],
        _claimed_by(owner),
    )


def mark_in_doubt(rec: Recipient, owner: str, now: float) -> bool:
    """The batch itself cannot tell whether its POST reached Meta (a read timeout)."""
    return write_if(
        rec,
        [Recipient.status.set(R.IN_DOUBT.value), Recipient.in_doubt_at.set(now)],
        _claimed_by(owner),
    )


def unclaim(rec: Recipient, owner: str, not_before: float | None, count_attempt: bool) -> bool:
    """Back to pending: the send was refused or never left, so it can be tried again."""
    actions = [Recipient.status.set(R.PENDING.value), Recipient.claimed_by.remove()]
    actions.append(Recipient.not_before.set(not_before) if not_before else Recipient.not_before.remove())
    if count_attempt:
        actions.append(Recipient.attempts.add(1))
    return write_if(rec, actions, _claimed_by(owner))


def settle_orphan(rec: Recipient, now: float) -> R | None:
    """A claim whose batch is gone: sent if a webhook already proved it (wamid), else in doubt.

    Conditioned on the very claim we read, so a holder that checkpoints first wins; and the
    in-doubt write on there being no wamid yet, so a webhook that lands meanwhile is not lost.
    """
    owner = rec.claimed_by or ""
    for _ in range(2):
        if rec.wamid is not None:
            ok = write_if(rec, [Recipient.status.set(R.SENT.value), Recipient.sent_at.set(now)], _claimed_by(owner))
            return R.SENT if ok else None
        ok = write_if(
            rec,
            [Recipient.status.set(R.IN_DOUBT.value), Recipient.in_doubt_at.set(now)],
            _claimed_by(owner) & Recipient.wamid.does_not_exist(),
        )
        if ok:
            return R.IN_DOUBT
        rec.refresh(consistent_read=True)  # a webhook recorded the wamid, or someone settled it
        if rec.status != R.SENDING.value or rec.claimed_by != owner:
            return None
    return None


def requeue_in_doubt(rec: Recipient, grace_ended_before: float) -> bool:
    """Policy `resend`: a send nobody proved within the grace period goes out again."""
    return write_if(
        rec,
        [Recipient.status.set(R.PENDING.value), Recipient.claimed_by.remove(), Recipient.not_before.remove()],
        (Recipient.status == R.IN_DOUBT.value) & (Recipient.in_doubt_at <= grace_ended_before),
    )


def requeue_absent(rec: Recipient, now: float) -> bool:
    """Policy `auto`: a send proven never to have reached Meta (campaigns.proof) goes out again.
    Conditioned on the very claim that left it in doubt, and on no webhook having recorded it."""
    return write_if(
        rec,
        [Recipient.status.set(R.PENDING.value), Recipient.claimed_by.remove(), Recipient.not_before.remove(),
         Recipient.absent_proven_at.set(now)],
        (Recipient.status == R.IN_DOUBT.value) & (Recipient.claimed_at == rec.claimed_at)
        & Recipient.wamid.does_not_exist(),
    )


def expire(rec: Recipient, now: float) -> bool:
    """Its campaign's expires_at passed with it still pending: it ends `expired`, never sent. Any
    batch may write it (no claim is needed: after the expiry nobody may claim it either)."""
    return write_if(rec, [Recipient.status.set(R.EXPIRED.value), Recipient.expired_at.set(now),
                          Recipient.not_before.remove()], Recipient.status == R.PENDING.value)


def scan(campaign_id: str, shard: int, from_seq: int = 0, page_size: int = SCAN_PAGE) -> Iterator[Recipient]:
    """The shard's recipients in seq order from `from_seq`, read consistently."""
    return Recipient.query(
        shard_pk(campaign_id, shard),
        Recipient.SK.between(recipient_sk(from_seq), recipient_sk(LAST_SEQ)),
        consistent_read=True,
        page_size=page_size,
    )


def recount(campaign_id: str, shard: int, committed_imports: set[str]) -> tuple[Counter, Counter]:
    """Exact counts over the whole shard (a takeover or a finish; never per message): by status,
    and by how in-doubt sends were resolved (states.IN_DOUBT_COUNTERS, from the recipients' flags)."""
    by_status: Counter = Counter()
    resolved: Counter = Counter()
    for rec in Recipient.query(
        shard_pk(campaign_id, shard),
        Recipient.SK.startswith("R#"),
        consistent_read=True,
        attributes_to_get=["status", "import_id", *IN_DOUBT_COUNTERS.values()],
        page_size=1000,
    ):
        if rec.import_id in committed_imports:
            by_status[rec.status] += 1
            resolved.update(name for name, flag in IN_DOUBT_COUNTERS.items() if getattr(rec, flag) is not None)
    return by_status, resolved


def retry_failed(rec: Recipient) -> bool:
    """retry-failed: a failure of a retryable class goes back to pending with fresh attempts."""
    return write_if(
        rec,
        [Recipient.status.set(R.PENDING.value), Recipient.attempts.set(0), Recipient.error_code.remove(),
         Recipient.error_message.remove(), Recipient.failed_at.remove(), Recipient.not_before.remove()],
        (Recipient.status == R.FAILED.value) & (Recipient.error_code == rec.error_code),
    )
