"""Claim and checkpoint races with webhooks, on the store (moto)."""

from __future__ import annotations

import time

from campaigns import ledger, proof, statuses
from campaigns.models import Campaign, Recipient, Shard, recipient_sk, shard_pk


def claimed(owner: str = "batch-a") -> Recipient:
    rec = Recipient(shard_pk("c1", 0), recipient_sk(7), phone="919876543210", import_id="i")
    rec.save()
    assert ledger.claim(rec, owner, time.time())
    assert not ledger.claim(rec, "batch-b", time.time()), "only one claimer can win"
    return rec


def status_webhook(kind: str, **extra) -> dict:
    return {"id": "wamid.X", "status": kind, "timestamp": str(int(time.time())),
            "recipient_id": "919876543210", "biz_opaque_callback_data": "c1:0:7", **extra}


def test_a_failed_status_that_beats_the_checkpoint_is_not_overwritten_by_sent(table):
    rec = claimed()
    statuses.apply(status_webhook("failed", errors=[{"code": 131026, "title": "undeliverable"}]))
    assert not ledger.mark_sent(rec, "batch-a", "wamid.X", time.time())
    rec.refresh()
    assert rec.status == "sending" and rec.error_code == 131026


def test_an_orphan_proven_by_a_webhook_is_settled_as_sent(table):
    rec = claimed()
    stale = Recipient.get(rec.PK, rec.SK)  # what the new holder read before the webhook landed
    statuses.apply(status_webhook("delivered"))
    assert ledger.settle_orphan(stale, time.time()).value == "sent"
    rec.refresh()
    assert rec.status == "sent"


def test_an_orphan_without_proof_is_in_doubt_and_a_late_checkpoint_of_its_batch_fails(table):
    rec = claimed()
    assert ledger.settle_orphan(Recipient.get(rec.PK, rec.SK), time.time()).value == "in_doubt"
    assert not ledger.mark_sent(rec, "batch-a", "wamid.X", time.time()), "the fenced batch cannot overwrite"
    statuses.apply(status_webhook("read"))
    rec.refresh()
    assert rec.status == "sent" and rec.read_at is not None


def test_a_claim_or_checkpoint_retried_after_its_first_attempt_landed_still_wins(table):
    """botocore retries a write whose answer was lost: the retry must not read as somebody else's claim."""
    rec = claimed("batch-a")
    assert ledger.claim(rec, "batch-a", time.time()), "the retried claim of the batch that holds it"
    assert ledger.mark_sent(rec, "batch-a", "wamid.X", time.time())
    assert ledger.mark_sent(rec, "batch-a", "wamid.X", time.time()), "the retried checkpoint"
    assert not ledger.mark_sent(rec, "batch-b", "wamid.X", time.time())
    assert not ledger.mark_sent(rec, "batch-a", "wamid.Y", time.time())
    assert not ledger.claim(rec, "batch-a", time.time()), "a sent recipient is never claimed again"
    rec.refresh()
    assert (rec.status, rec.wamid) == ("sent", "wamid.X")


# -- in doubt under policy auto: the number's proof, proof of absence, a late status ------------------

def in_doubt_since_claim(seq: int, owner: str = "batch-a") -> Recipient:
    rec = Recipient(shard_pk("c1", 0), recipient_sk(seq), phone="919876543210", import_id="i")
    rec.save()
    assert ledger.claim(rec, owner, time.time())
    assert ledger.mark_in_doubt(rec, owner, time.time())
    rec.refresh()
    return rec


def test_a_status_raises_its_numbers_proof_to_the_claim_it_reports_on_never_lowers_it(table):
    proof.forget()
    late = claimed()  # seq 7, claimed now
    late.refresh()
    assert proof.latest_proven_claim("1234") == 0.0  # no webhook yet: nothing proven
    statuses.apply(status_webhook("sent"), "1234")
    assert proof.latest_proven_claim("1234") == late.claimed_at
    proof.forget()  # another webhook process, which has not raised it: an older claim must not lower it
    proof.record_proven_claim("1234", late.claimed_at - 100, time.time())
    assert proof.latest_proven_claim("1234") == late.claimed_at
    assert proof.latest_proven_claim("5678") == 0.0  # per number


def test_a_status_without_metadata_raises_the_proof_of_its_campaigns_number(table):
    proof.forget()
    Campaign(*Campaign.key("c1"), id="c1", name="n", phone_number_id="4321", template={}, rate=80,
             shard_count=1, status="sending", created_at="2026-12-01T00:00:00.000+00:00").save()
    rec = claimed()
    rec.refresh()
    statuses.apply(status_webhook("sent"))  # no phone_number_id from the webhook's metadata
    assert proof.latest_proven_claim("4321") == rec.claimed_at


def test_absence_is_requeued_once_and_only_for_the_claim_that_left_it_in_doubt(table):
    rec = in_doubt_since_claim(8)
    stale = Recipient.get(rec.PK, rec.SK)
    assert ledger.requeue_absent(rec, time.time())
    assert not ledger.requeue_absent(stale, time.time()), "a second batch with the same read requeues nothing"
    rec.refresh()
    assert rec.status == "pending" and rec.absent_proven_at is not None and rec.claimed_by is None


def test_absence_is_not_requeued_once_a_webhook_recorded_the_send(table):
    rec = in_doubt_since_claim(9)
    statuses.apply({**status_webhook("sent"), "biz_opaque_callback_data": "c1:0:9", "id": "wamid.FIRST"}, "1234")
    assert not ledger.requeue_absent(rec, time.time())
    rec.refresh()
    assert rec.status == "sent" and rec.proven_at is not None


def test_a_late_status_of_a_send_resent_after_absence_is_counted_once_as_a_duplicate(table):
    Shard(*Shard.key("c1", 0), campaign_id="c1", shard=0).save()
    rec = in_doubt_since_claim(10)
    assert ledger.requeue_absent(rec, time.time())
    rec.refresh()
    assert ledger.claim(rec, "batch-b", time.time())
    assert ledger.mark_sent(rec, "batch-b", "wamid.RESEND", time.time())
    resend_status = {**status_webhook("delivered"), "biz_opaque_callback_data": "c1:0:10", "id": "wamid.RESEND"}
    statuses.apply(resend_status, "1234")
    assert Shard.get(*Shard.key("c1", 0)).duplicates == 0  # the resend's own status: nothing twice
    first_status = {**status_webhook("sent"), "biz_opaque_callback_data": "c1:0:10", "id": "wamid.FIRST"}
    statuses.apply(first_status, "1234")  # the first send's status, late: it had reached Meta
    statuses.apply({**first_status, "status": "delivered"}, "1234")  # and its next one
    rec.refresh()
    assert rec.duplicate_at is not None
    assert Shard.get(*Shard.key("c1", 0)).duplicates == 1
