"""The writes that end a sender batch: finish the shard, hand it to the next batch, or let it go.

What to do is `progress.ending`'s decision; this does it. Every write is fenced by the batch's
lease (campaigns/lease.py): a batch that lost its lease writes nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import invoker, ledger, lifecycle
from . import lease as leases
from .config import Settings
from .models import Campaign, Shard, write_if
from .progress import Ending, ShardProgress, Stop, ending
from .states import IN_DOUBT_COUNTERS, SETTLED_COUNTERS, CampaignStatus
from .states import RecipientStatus as R

RECOUNT_ATTEMPTS = 5  # a webhook moving a recipient between the count and its write: count again


class BatchEnd:
    """`shard_actions` is the shard item's update for what the batch has not written yet (its
    progress's cursor and counters, the live figures riding along)."""

    def __init__(self, lease: leases.Lease, progress: ShardProgress, shard_actions: Callable[[], list],
                 committed_imports: set[str], hop: int, settings: Settings):
        self.lease, self.progress, self.shard_actions = lease, progress, shard_actions
        self.committed_imports, self.hop, self.settings = committed_imports, hop, settings

    def __call__(self, stop: Stop) -> None:
        decided = ending(stop, self.progress.made_progress())
        if decided == Ending.UNTOUCHED:
            return
        if self.lease.predecessor_died:
            # After the sends, not before them: a takeover resumes sending at once, and the
            # counters it shows meanwhile are only low by what the dead batch had not flushed.
            self._recount()
        if decided == Ending.RELEASE_HALTED:
            self._release(due_at=None)
            self._restart_if_resumed()
        elif decided == Ending.FINISH and self._nothing_open():
            self._finish_shard()
        elif decided == Ending.HAND_OFF:
            self._hand_off()
        elif decided == Ending.EXPIRE and self._expire_pending():
            self._finish_shard()
        else:  # RELEASE, or FINISH or EXPIRE with work still open after all
            self._release(due_at=self.progress.due_again(time.time()))

    def _release(self, due_at: float | None) -> None:
        leases.release(self.lease, due_at, self.shard_actions())
        self.progress.written()

    def _hand_off(self) -> None:
        token = leases.new_token()
        if leases.hand_off(self.lease, token, self.settings, self.shard_actions()):
            self.progress.written()
            invoker.invoke_sender(self.settings, invoker.sender_event(self.lease.campaign_id, self.lease.shard,
                                                                       token, self.hop + 1))

    def _restart_if_resumed(self) -> None:
        """Resume may have raced our release: if the campaign is sending again, start a batch.

        Resume writes `sending` before it reserves shards; we release before we read the
        status. So either resume found our lease free, or we see `sending` here.
        """
        status = Campaign.get(*Campaign.key(self.lease.campaign_id), consistent_read=True).status
        if status == CampaignStatus.SENDING:
            lifecycle.start_shard(self.lease.campaign_id, self.lease.shard, self.settings)

    def _nothing_open(self) -> bool:
        """Confirm with a fresh read that no recipient of the shard is pending or in flight."""
        for rec in ledger.scan(self.lease.campaign_id, self.lease.shard, self.progress.cursor()):
            if rec.import_id in self.committed_imports and rec.status in (R.PENDING, R.SENDING):
                return False
        return True

    def _expire_pending(self) -> bool:
        """The campaign expired: every recipient still pending ends expired (a claim a dead batch left
        is settled first, as a scan would); True if nothing is open after that."""
        now, open_left = time.time(), False
        for rec in ledger.scan(self.lease.campaign_id, self.lease.shard, self.progress.cursor()):
            if rec.import_id not in self.committed_imports:
                continue
            if rec.status == R.SENDING and rec.claimed_by != self.lease.owner:
                settled = ledger.settle_orphan(rec, now)  # sent (a webhook proved it) or in doubt
                if settled is not None:
                    self.progress.settled_orphan(settled)
                open_left = open_left or settled is None
            elif rec.status == R.PENDING:
                if ledger.expire(rec, now):
                    self.progress.expired(rec)
                else:
                    open_left = True  # moved meanwhile: a later batch looks at it again
        return not open_left

    def _finish_shard(self) -> None:
        leases.release(self.lease, None, [Shard.finished_at.set(time.time()), *self.shard_actions()])
        self.progress.written()
        lifecycle.close_shard(self.lease.campaign_id, self.lease.shard)

    def _recount(self) -> None:
        """Make the shard's counters exact; retried if a webhook moved a recipient meanwhile."""
        campaign_id, shard = self.lease.campaign_id, self.lease.shard
        for _ in range(RECOUNT_ATTEMPTS):
            webhook_moves = int(Shard.get(*Shard.key(campaign_id, shard), consistent_read=True).webhook_moves)
            by_status, resolved = ledger.recount(campaign_id, shard, self.committed_imports)
            exact = write_if(
                Shard(*Shard.key(campaign_id, shard)),
                [getattr(Shard, name).set(by_status.get(name, 0)) for name in SETTLED_COUNTERS]
                + [getattr(Shard, name).set(resolved.get(name, 0)) for name in IN_DOUBT_COUNTERS]
                + [Shard.total.set(sum(by_status.values()))],
                (Shard.lease_owner == self.lease.owner) & (Shard.webhook_moves == webhook_moves),
            )
            if exact:
                self.progress.written()
                return
