"""Claim and checkpoint races with webhooks, on the store (moto)."""

from __future__ import annotations

import time

from campaigns import ledger, statuses
from campaigns.models import Recipient, recipient_sk, shard_pk


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
