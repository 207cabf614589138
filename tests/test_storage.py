"""The local DynamoDB: moto's server as local/moto_server.py runs it."""

from __future__ import annotations

import time

from campaigns import ledger
from campaigns.models import Recipient, recipient_sk


def test_the_server_counts_the_calls_it_answers_by_operation(moto_server, table):
    before = moto_server.operation_counts()
    rec = Recipient("CAMPAIGN#c#SHARD#0", recipient_sk(1), phone="919800000001", import_id="i")
    rec.save()
    assert ledger.claim(rec, "batch", time.time())
    assert not ledger.claim(rec, "other", time.time())  # refused calls are answered, and counted, too
    Recipient.get(rec.PK, rec.SK)
    counted = moto_server.operation_counts() - before
    assert counted == {"PutItem": 1, "UpdateItem": 2, "GetItem": 1}

