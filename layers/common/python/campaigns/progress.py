"""What a sender batch knows of its shard while it sends, and the decisions it takes from that alone.

The batch's main loop owns a `ShardProgress`: which recipients it read and left open, which wait
for a retry, how far it has read, and the counter changes not yet written to the shard item.
`triage` sorts a recipient the scan read; `ending` says how a batch that stopped ends. None of it
does I/O: the batch (campaigns/sender.py) and its end (campaigns/batch_end.py) act on what these
decide, and tests/test_progress.py checks the decisions without a store.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from .models import Recipient, Shard
from .proof import absence_proven
from .sending import SETTLED, Kind
from .states import InDoubtPolicy
from .states import RecipientStatus as R


class Stop(StrEnum):
    """Why a batch stopped sending."""

    DONE = "done"  # no recipient of the shard is open any more
    TIME = "time"  # the batch's time is up
    WAIT = "wait"  # what is left waits longer than this batch can
    HALTED = "halted"  # the campaign is no longer sending (paused, cancelled, fatal error)
    LEASE_LOST = "lease_lost"  # somebody else holds the shard now
    EXPIRED = "expired"  # the campaign's expires_at passed: nothing more may be sent


class Ending(StrEnum):
    """How a stopped batch leaves its shard."""

    UNTOUCHED = "untouched"  # the lease is somebody else's: nothing of ours may be written
    RELEASE_HALTED = "release_halted"  # let go with no time to look again; start anew if resumed meanwhile
    FINISH = "finish"  # finished, if a fresh read finds nothing open (else RELEASE)
    HAND_OFF = "hand_off"  # the lease to the next batch, which this one invokes
    RELEASE = "release"  # let go, due again when its earliest wait is over
    EXPIRE = "expire"  # what is still pending ends expired; then finished, if nothing is open


def ending(stop: Stop, made_progress: bool) -> Ending:
    if stop == Stop.LEASE_LOST:
        return Ending.UNTOUCHED
    if stop == Stop.HALTED:
        return Ending.RELEASE_HALTED
    if stop == Stop.DONE:
        return Ending.FINISH
    if stop == Stop.EXPIRED:
        return Ending.EXPIRE
    if stop == Stop.TIME and made_progress:
        return Ending.HAND_OFF
    # No progress this batch: no self-continuation loop; recovery looks at the shard again.
    return Ending.RELEASE


class Sorting(StrEnum):
    """What a recipient the scan read asks of the batch."""

    SKIP = "skip"  # nothing: settled, not this policy's to resend, or of an import that never finished
    READY = "ready"  # pending: send it now
    WAIT = "wait"  # pending, not before a later time (a retry's backoff)
    ORPHAN = "orphan"  # claimed by a batch that is gone: settle what it left
    REQUEUE = "requeue"  # in doubt, and its policy's condition to send it again holds
    PARK = "park"  # in doubt, its policy still waiting (a grace period, a proof): keep the shard open for it


def in_doubt_grace_end(in_doubt_since: float, grace_seconds: float) -> float:
    """When policy resend may send an in-doubt recipient again (a status webhook may prove it first)."""
    return in_doubt_since + grace_seconds


def in_doubt_grace_over_before(now: float, grace_seconds: float) -> float:
    """The moment before which a recipient must have gone in doubt for its grace to be over `now`
    (the condition of ledger.requeue_in_doubt's write)."""
    return now - grace_seconds


@dataclass(frozen=True)
class InDoubtRule:
    """What a batch does with the in-doubt recipients it reads, under its campaign's policy.

    skip: nothing (at most once). resend: send again once the grace period is over. auto: send
    again once absence is proven (campaigns/proof.py) from the number's watermark as the batch
    read it; wait for that at most `proof_wait_seconds`, looking again every `recheck_seconds`.
    """

    policy: InDoubtPolicy
    grace_seconds: float = 0.0
    proof_quiet_seconds: float = 0.0
    proof_wait_seconds: float = 0.0
    recheck_seconds: float = 0.0
    latest_proven_claim: float = 0.0

    def sort(self, rec: Recipient, now: float) -> Sorting:
        since = rec.in_doubt_at or now
        if self.policy == InDoubtPolicy.RESEND:
            return Sorting.REQUEUE if in_doubt_grace_end(since, self.grace_seconds) <= now else Sorting.PARK
        if self.policy == InDoubtPolicy.AUTO:
            if absence_proven(rec.claimed_at or since, since, self.latest_proven_claim, now, self.proof_quiet_seconds):
                return Sorting.REQUEUE
            # No proof either way within the wait (webhooks silent): it stays in doubt, nothing resent.
            return Sorting.PARK if now < since + self.proof_wait_seconds else Sorting.SKIP
        return Sorting.SKIP

    def park_until(self, since: float, now: float) -> float | None:
        """When the shard should be looked at again for a recipient in doubt since `since`; None
        if this policy does not wait for it."""
        if self.policy == InDoubtPolicy.RESEND:
            return in_doubt_grace_end(since, self.grace_seconds)
        if self.policy == InDoubtPolicy.AUTO:
            return min(now + self.recheck_seconds, since + self.proof_wait_seconds)
        return None


def triage(rec: Recipient, now: float, owner: str, committed_imports: set[str], in_doubt: InDoubtRule) -> Sorting:
    if rec.import_id not in committed_imports:
        return Sorting.SKIP  # part of an import that never finished: it does not exist
    if rec.status == R.PENDING:
        return Sorting.WAIT if rec.not_before and rec.not_before > now else Sorting.READY
    if rec.status == R.SENDING and rec.claimed_by != owner:
        return Sorting.ORPHAN
    if rec.status == R.IN_DOUBT:
        return in_doubt.sort(rec, now)
    return Sorting.SKIP


class ShardProgress:
    """The recipients a batch has read and not settled, and what it has not yet written."""

    def __init__(self, cursor: int, deadline: float | None = None):
        self.deadline = deadline  # the campaign's expiry: the shard is looked at again no later
        self.start_cursor = self.scanned_to = cursor  # every seq below scanned_to has been read
        self.open_seqs: set[int] = set()
        self.waiting: list[tuple[float, int, Recipient]] = []  # (retry_at, seq, rec): a heap
        self.deltas: Counter = Counter()  # counter changes not yet written to the shard item
        self.outcomes: Counter = Counter()  # the batch's results by kind, for its report
        self.parked_until: float | None = None  # the earliest end of a parked in-doubt's grace

    def scanned(self, rec: Recipient) -> None:
        self.scanned_to = rec.seq + 1

    def open(self, rec: Recipient) -> None:
        """Read and not settled: the cursor stays at or below it."""
        self.open_seqs.add(rec.seq)

    def wait(self, rec: Recipient, until: float) -> None:
        self.open(rec)
        heapq.heappush(self.waiting, (until, rec.seq, rec))

    def park(self, rec: Recipient, until: float) -> None:
        self.open(rec)
        self.parked_until = min(self.parked_until or until, until)

    def park_shard(self, until: float) -> None:
        """The whole shard waits (a limit, a window): looked at again no later than `until`."""
        self.parked_until = min(self.parked_until or until, until)

    def due(self, now: float) -> Recipient | None:
        """The waiting recipient whose time has come, if any."""
        if self.waiting and self.waiting[0][0] <= now:
            return heapq.heappop(self.waiting)[2]
        return None

    def earliest_wait(self) -> float | None:
        return self.waiting[0][0] if self.waiting else None

    def due_again(self, now: float) -> float:
        """When recovery should look at the shard again: its earliest wait, else now; at the latest,
        the campaign's expiry (its pending recipients then end expired)."""
        waits = [t for t in (self.parked_until, self.earliest_wait()) if t]
        due = min(waits, default=now)
        return min(due, self.deadline) if self.deadline else due

    def record(self, kind: Kind, rec: Recipient) -> None:
        self.outcomes[kind] += 1
        if kind in SETTLED:
            self.deltas[kind] += 1
            self.open_seqs.discard(rec.seq)

    def requeued_in_doubt(self, rec: Recipient, absent: bool) -> None:
        """Sent again: after its grace period, or (`absent`) after proof that it never arrived."""
        self.deltas[R.IN_DOUBT.value] -= 1
        if absent:
            self.deltas["resent_after_absence"] += 1
        self.open(rec)

    def settled_orphan(self, status: R) -> None:
        self.deltas[status.value] += 1

    def expired(self, rec: Recipient) -> None:
        self.deltas[R.EXPIRED.value] += 1
        self.open_seqs.discard(rec.seq)

    def cursor(self) -> int:
        """Where the next batch starts reading: the lowest open seq, else all that was read."""
        return min(self.open_seqs, default=self.scanned_to)

    def made_progress(self) -> bool:
        return any(self.outcomes[k] for k in SETTLED) or self.cursor() > self.start_cursor

    def shard_actions(self) -> list:
        """The shard item's update for what is not yet written: the cursor and the counters."""
        actions = [Shard.cursor.set(self.cursor())]
        actions += [getattr(Shard, name).add(delta) for name, delta in self.deltas.items() if delta]
        return actions

    def written(self) -> None:
        """The shard item took shard_actions' update (or a recount made the counters exact)."""
        self.deltas.clear()
