"""The sender batch's decisions that need no store: sorting what the scan reads, the cursor and the
counters it leaves, when the shard is due again, and how a stopped batch ends (campaigns/progress.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.models import Recipient, recipient_sk, shard_pk
from campaigns.progress import (
    Ending,
    InDoubtRule,
    ShardProgress,
    Sorting,
    Stop,
    ending,
    in_doubt_grace_end,
    triage,
)
from campaigns.sending import SETTLED, Kind
from campaigns.states import InDoubtPolicy
from campaigns.states import RecipientStatus as R

NOW = 1_800_000_000.0
OWNER = "batch-a"
IMPORTS = {"import-1"}
GRACE = 300.0
QUIET, WAIT, RECHECK = 30.0, 600.0, 10.0
SKIP = InDoubtRule(InDoubtPolicy.SKIP)
RESEND = InDoubtRule(InDoubtPolicy.RESEND, grace_seconds=GRACE)


def auto(latest_proven_claim: float) -> InDoubtRule:
    return InDoubtRule(InDoubtPolicy.AUTO, GRACE, QUIET, WAIT, RECHECK, latest_proven_claim)


def recipient(seq: int = 1, status: R = R.PENDING, **fields) -> Recipient:
    """A recipient as the scan returns it, made in memory (no store)."""
    fields.setdefault("import_id", "import-1")
    return Recipient(shard_pk("c1", 0), recipient_sk(seq), phone="919800000001", status=status.value, **fields)


# -- triage -------------------------------------------------------------------------------------

def in_doubt(claimed_ago: float, in_doubt_ago: float) -> Recipient:
    return recipient(status=R.IN_DOUBT, claimed_at=NOW - claimed_ago, in_doubt_at=NOW - in_doubt_ago)


@pytest.mark.parametrize(("rec", "rule", "expected"), [
    (recipient(), SKIP, Sorting.READY),
    (recipient(not_before=NOW - 1), SKIP, Sorting.READY),
    (recipient(not_before=NOW + 5), SKIP, Sorting.WAIT),
    (recipient(import_id="import-2"), SKIP, Sorting.SKIP),  # an import that never committed
    (recipient(status=R.SENDING, claimed_by="batch-dead"), SKIP, Sorting.ORPHAN),
    (recipient(status=R.SENDING, claimed_by=OWNER), SKIP, Sorting.SKIP),
    (recipient(status=R.SENT), RESEND, Sorting.SKIP),
    (recipient(status=R.FAILED), auto(NOW), Sorting.SKIP),
    (in_doubt(10, 10), SKIP, Sorting.SKIP),  # policy skip: never resent
    (in_doubt(10, 10), RESEND, Sorting.PARK),
    (in_doubt(GRACE, GRACE), RESEND, Sorting.REQUEUE),
    (in_doubt(GRACE, GRACE - 0.001), RESEND, Sorting.PARK),
    # auto: a send claimed after it was reported on, and QUIET passed with no status of its own
    (in_doubt(40, QUIET), auto(NOW - 40 + 0.001), Sorting.REQUEUE),
    (in_doubt(40, QUIET), auto(NOW - 40), Sorting.PARK),  # nothing claimed after it reported on yet
    (in_doubt(40, QUIET - 0.001), auto(NOW), Sorting.PARK),  # its own status may still come
    (in_doubt(WAIT + 60, WAIT), auto(0.0), Sorting.SKIP),  # webhooks silent all along: never resent
    (in_doubt(WAIT + 60, WAIT - 1), auto(0.0), Sorting.PARK),
], ids=lambda v: v if isinstance(v, (str, float)) else None)
def test_triage_sorts_what_the_scan_reads(rec, rule, expected):
    assert triage(rec, NOW, OWNER, IMPORTS, rule) == expected


def test_a_parked_in_doubt_recipient_is_looked_at_again_by_its_policy():
    assert RESEND.park_until(since=NOW, now=NOW) == NOW + GRACE
    assert auto(0.0).park_until(since=NOW, now=NOW) == NOW + RECHECK
    assert auto(0.0).park_until(since=NOW - WAIT + 1, now=NOW) == NOW + 1  # never past its wait
    assert SKIP.park_until(since=NOW, now=NOW) is None


def test_an_in_doubt_recipient_is_resendable_exactly_at_the_end_of_its_grace():
    assert in_doubt_grace_end(NOW, GRACE) == NOW + GRACE


# -- progress: the cursor, the counters, the next look --------------------------------------------

def test_the_cursor_stays_at_the_lowest_recipient_read_and_not_settled():
    progress = ShardProgress(cursor=10)
    assert progress.cursor() == 10 and not progress.made_progress()
    recs = [recipient(seq) for seq in (10, 11, 12)]
    for rec in recs:
        progress.scanned(rec)
        progress.open(rec)
    assert progress.cursor() == 10
    progress.record(Kind.SENT, recs[0])
    assert progress.cursor() == 11 and progress.made_progress()
    progress.record(Kind.RETRY, recs[1])  # not settled: still open
    assert progress.cursor() == 11
    progress.record(Kind.FAILED, recs[1])
    progress.record(Kind.IN_DOUBT, recs[2])
    assert progress.cursor() == 13  # all read, nothing open


def test_a_batch_that_only_read_past_settled_recipients_made_progress():
    progress = ShardProgress(cursor=0)
    progress.scanned(recipient(5, R.SENT))
    assert progress.cursor() == 6 and progress.made_progress()


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(list(Kind))), max_size=80))
def test_the_cursor_never_passes_an_open_recipient_nor_what_was_read(events):
    progress = ShardProgress(cursor=0)
    open_now: set[int] = set()
    for seq, kind in sorted(events):
        rec = recipient(seq)
        progress.scanned(rec)
        progress.open(rec)
        open_now.add(seq)
        progress.record(kind, rec)
        if kind in SETTLED:
            open_now.discard(seq)
        assert progress.cursor() == min(open_now, default=progress.scanned_to)


def test_the_counters_written_are_the_settled_kinds_and_are_written_once():
    progress = ShardProgress(cursor=0)
    for seq, kind in enumerate([Kind.SENT, Kind.SENT, Kind.FAILED, Kind.RETRY, Kind.LOST]):
        rec = recipient(seq)
        progress.scanned(rec)
        progress.open(rec)
        progress.record(kind, rec)
    assert dict(progress.deltas) == {"sent": 2, "failed": 1}
    assert len(progress.shard_actions()) == 3  # the cursor, sent, failed
    progress.written()
    assert len(progress.shard_actions()) == 1  # the cursor alone
    assert progress.outcomes == {Kind.SENT: 2, Kind.FAILED: 1, Kind.RETRY: 1, Kind.LOST: 1}  # the report keeps all


def test_a_requeued_in_doubt_recipient_leaves_the_in_doubt_count_and_stays_open():
    progress = ShardProgress(cursor=0)
    rec = recipient(3, R.IN_DOUBT)
    progress.scanned(rec)
    progress.requeued_in_doubt(rec, absent=True)
    assert progress.deltas == {"in_doubt": -1, "resent_after_absence": 1} and progress.cursor() == 3


def test_waiting_recipients_come_back_in_time_order_once_due():
    progress = ShardProgress(cursor=0)
    late, early = recipient(1), recipient(2)
    progress.wait(late, until=NOW + 20)
    progress.wait(early, until=NOW + 5)
    assert progress.due(NOW) is None
    assert progress.earliest_wait() == NOW + 5
    assert progress.due(NOW + 5) is early
    assert progress.due(NOW + 19) is None
    assert progress.due(NOW + 20) is late
    assert progress.earliest_wait() is None


def test_the_shard_is_due_again_at_its_earliest_wait_or_parked_grace_else_now():
    progress = ShardProgress(cursor=0)
    assert progress.due_again(NOW) == NOW
    progress.wait(recipient(1), until=NOW + 30)
    assert progress.due_again(NOW) == NOW + 30
    progress.park(recipient(2), until=NOW + 300)
    progress.park(recipient(3), until=NOW + 12)
    assert progress.parked_until == NOW + 12
    assert progress.due_again(NOW) == NOW + 12
    assert progress.cursor() == 1  # parked and waiting recipients are open


def test_a_shard_of_a_campaign_that_expires_is_due_again_no_later_than_its_expiry():
    progress = ShardProgress(cursor=0, deadline=NOW + 60)
    progress.park_shard(NOW + 3600)  # its send window opens in an hour: the expiry comes first
    assert progress.due_again(NOW) == NOW + 60
    progress.wait(recipient(1), until=NOW + 5)
    assert progress.due_again(NOW) == NOW + 5
    assert ShardProgress(cursor=0, deadline=NOW + 60).due_again(NOW) == NOW


# -- the end of a batch -------------------------------------------------------------------------

@pytest.mark.parametrize(("stop", "made_progress", "expected"), [
    (Stop.LEASE_LOST, True, Ending.UNTOUCHED),
    (Stop.LEASE_LOST, False, Ending.UNTOUCHED),
    (Stop.HALTED, True, Ending.RELEASE_HALTED),
    (Stop.DONE, False, Ending.FINISH),
    (Stop.TIME, True, Ending.HAND_OFF),
    (Stop.TIME, False, Ending.RELEASE),  # no progress: no self-continuation loop
    (Stop.WAIT, True, Ending.RELEASE),
    (Stop.EXPIRED, False, Ending.EXPIRE),
])
def test_how_a_stopped_batch_ends(stop, made_progress, expected):
    assert ending(stop, made_progress) == expected
