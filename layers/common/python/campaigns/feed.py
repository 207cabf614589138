"""The recipients a sender batch sends, in order: retries whose time has come, then the shard's scan.

Each recipient the scan reads is sorted by `progress.triage`; the feed does the writes that
sorting asks for (settling an orphaned claim, requeueing an in-doubt recipient whose grace is
over) and keeps the batch's `ShardProgress` up to date. Runs on the batch's main loop only.
"""

from __future__ import annotations

import time

from . import lease as leases
from . import ledger, proof
from .config import Settings
from .models import Campaign, Recipient
from .observability import Metric, count, logger
from .progress import InDoubtRule, ShardProgress, Sorting, in_doubt_grace_over_before, triage
from .readahead import ReadAhead
from .states import InDoubtPolicy
from .states import RecipientStatus as R


def in_doubt_rule(campaign: Campaign, settings: Settings) -> InDoubtRule:
    """The campaign's in-doubt policy for one batch, with the number's proof as of now (policy auto:
    a recipient it cannot prove absent yet waits for a later batch)."""
    policy = InDoubtPolicy(campaign.in_doubt_policy or InDoubtPolicy.AUTO)
    latest = proof.latest_proven_claim(campaign.phone_number_id) if policy == InDoubtPolicy.AUTO else 0.0
    return InDoubtRule(policy, settings.in_doubt_grace_seconds, settings.proof_quiet_seconds,
                       settings.proof_wait_seconds, settings.proof_recheck_seconds, latest)


class ShardFeed:
    def __init__(self, lease: leases.Lease, progress: ShardProgress, committed_imports: set[str],
                 in_doubt: InDoubtRule, where: dict):
        self.lease, self.progress, self.committed_imports = lease, progress, committed_imports
        self.in_doubt, self.where = in_doubt, where
        # The next page is read while this one is sent: reading it on the send loop would pause every send.
        self._reader = ReadAhead(ledger.scan(lease.campaign_id, lease.shard, progress.scanned_to),
                                 buffer=ledger.SCAN_PAGE)
        self._scanning = True

    def next_ready(self) -> Recipient | None:
        """The next recipient to send now, or None if none is ready at the moment."""
        rec = self.progress.due(time.time())
        if rec is not None:
            return rec
        while self._scanning:
            rec = next(self._reader, None)
            if rec is None:
                self._scanning = False
                return None
            self.progress.scanned(rec)
            if self._ready(rec):
                return rec
        return None

    def park_in_doubt(self, rec: Recipient, since: float) -> None:
        """A recipient in doubt since `since` keeps the shard open while its policy waits (resend: its
        grace period; auto: a proof either way); a later batch of the shard looks at it again."""
        until = self.in_doubt.park_until(since, time.time())
        if until is not None:
            self.progress.park(rec, until=until)

    def close(self) -> None:
        self._reader.close()

    def _ready(self, rec: Recipient) -> bool:
        """Act on a scanned recipient's triage; True if it is to be sent now."""
        now = time.time()
        sorting = triage(rec, now, self.lease.owner, self.committed_imports, self.in_doubt)
        if sorting == Sorting.READY:
            self.progress.open(rec)
            return True
        if sorting == Sorting.WAIT:
            self.progress.wait(rec, until=rec.not_before)
        elif sorting == Sorting.ORPHAN:
            self._settle_orphan(rec, now)
        elif sorting == Sorting.REQUEUE:
            return self._requeue(rec, now)
        elif sorting == Sorting.PARK:
            self.park_in_doubt(rec, since=rec.in_doubt_at or now)
        return False

    def _requeue(self, rec: Recipient, now: float) -> bool:
        absent = self.in_doubt.policy == InDoubtPolicy.AUTO
        if absent:
            requeued = ledger.requeue_absent(rec, now)
        else:
            requeued = ledger.requeue_in_doubt(rec, in_doubt_grace_over_before(now, self.in_doubt.grace_seconds))
        if not requeued:
            return False  # a webhook proved it meanwhile, or another batch took it
        self.progress.requeued_in_doubt(rec, absent)
        rec.status = R.PENDING.value
        if absent:
            count(Metric.RESENT_AFTER_ABSENCE)
            logger.info("in-doubt send proven absent: sent again", extra={**self.where, "seq": rec.seq})
        return True

    def _settle_orphan(self, rec: Recipient, now: float) -> None:
        settled = ledger.settle_orphan(rec, now)
        if settled is None:
            return
        self.progress.settled_orphan(settled)
        if settled == R.IN_DOUBT:
            count(Metric.MESSAGES_IN_DOUBT)
            self.park_in_doubt(rec, since=now)
        logger.info("settled an orphaned claim", extra={**self.where, "seq": rec.seq, "as": settled.value})
