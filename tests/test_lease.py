"""The lease protocol against the store (moto), checked on random interleavings of its actors."""

from __future__ import annotations

import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import lease as leases
from campaigns.config import Settings
from campaigns.models import Shard

SETTINGS = Settings(lease_seconds=30)
OPS = ["start", "acquire", "acquire_again", "renew", "release", "expire_and_take_over", "fail_and_take_over",
       "request_halt"]


def new_shard() -> str:
    campaign_id = uuid.uuid4().hex
    Shard(*Shard.key(campaign_id, 0), campaign_id=campaign_id, shard=0).save()
    return campaign_id


def gen_of(campaign_id: str) -> int:
    return int(Shard.get(*Shard.key(campaign_id, 0), consistent_read=True).lease_gen)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(OPS), min_size=1, max_size=12))
def test_one_holder_at_a_time_and_the_generation_only_grows(table, ops):
    campaign_id = new_shard()
    tokens: list[str] = []  # reserved for invocations, newest last
    holders: list[leases.Lease] = []  # every lease ever acquired
    last_gen = 0
    for op in ops:
        changed = False
        if op == "start":
            token = leases.new_token()
            changed = leases.hand_to(campaign_id, 0, token, leases.free_or_expired(time.time()), SETTINGS) is not None
            if changed:
                tokens.append(token)
        elif op in ("acquire", "acquire_again") and tokens:
            # acquire_again replays the same event: Lambda's at-least-once delivery.
            token = tokens[-1]
            first = leases.acquire(campaign_id, 0, token, SETTINGS)
            changed = first is not None
            if first:
                holders.append(first[0])
            if op == "acquire_again":
                assert leases.acquire(campaign_id, 0, token, SETTINGS) is None, "a duplicate took the lease"
        elif op == "renew" and holders:
            current = holders[-1]
            try:
                leases.renew(current, SETTINGS)
            except leases.LeaseLost:
                assert Shard.get(*Shard.key(campaign_id, 0), consistent_read=True).lease_owner != current.owner
            except leases.HaltRequested as request:
                # Refused with the lease still its own: it looks from the new count and renews.
                assert request.halts > current.halts_seen and current.usable()
                current.halts_seen = request.halts
                leases.renew(current, SETTINGS)
        elif op == "request_halt":
            leases.request_halt(campaign_id, [0])  # a pause or cancel: it changes no holder
        elif op == "release" and holders:
            changed = leases.release(holders[-1], due_at=None)
        elif op == "expire_and_take_over":
            # Recovery's clock, past any lease: the takeover must always succeed.
            later = time.time() + SETTINGS.lease_seconds + 1
            token = leases.new_token()
            assert leases.hand_to(campaign_id, 0, token, leases.free_or_expired(later), SETTINGS) is not None
            tokens.append(token)
            changed = True
        elif op == "fail_and_take_over" and tokens:
            # An on-failure record names the failed invocation's token: it only acts while that holds.
            token = leases.new_token()
            expected = Shard.get(*Shard.key(campaign_id, 0), consistent_read=True).lease_token == tokens[-1]
            took = leases.hand_to(campaign_id, 0, token, leases.token_is(tokens[-1]), SETTINGS) is not None
            assert took == expected
            if took:
                tokens.append(token)
            changed = took
        gen = gen_of(campaign_id)
        assert gen > last_gen if changed else gen == last_gen, (op, gen, last_gen)
        last_gen = gen
        # Every holder but the newest is fenced: its heartbeat fails, whatever halt it has not seen.
        for stale in holders[:-1]:
            try:
                leases.renew(stale, SETTINGS)
                raise AssertionError("a superseded holder renewed its lease")
            except leases.LeaseLost:
                assert not stale.usable()
