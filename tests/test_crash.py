"""The crash suite: sender batches are real OS processes, killed with SIGKILL (or frozen with
SIGSTOP) at random points, including between a POST and its checkpoint. Afterwards, what the
fake Graph API received is checked against the store: nothing lost, nothing sent twice."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from campaigns import service
from campaigns.config import settings
from campaigns.models import Shard
from tests.helpers import audit, live_senders, new_campaign, senders_stopped, status, wait_until

pytestmark = pytest.mark.crash

MAX_IN_FLIGHT = 8


def kill_while_a_response_is_held(stack) -> None:
    """SIGKILL the sender while the provider holds a response to a send it has recorded."""
    stack.fake.configure(latency_ms=60_000)  # every request from now on waits for its answer
    accepted = stack.fake.stats()["accepted"]
    held = wait_until(lambda: stack.fake.stats()["accepted"] > accepted and live_senders(stack), 30,
                      "a send recorded after the hold")
    os.kill(held[0]["pid"], signal.SIGKILL)


def completed(campaign):
    return lambda: status(campaign)["status"] == "completed"


def assert_invariants(campaign, fake, kills: int) -> dict:
    result = audit(campaign, fake)
    assert result["lost"] == 0, result
    assert result["forbidden_duplicates"] == {}, result
    assert result["sent_not_received"] == [], result
    assert result["received_not_accounted"] == [], result
    assert result["in_doubt"] <= kills * MAX_IN_FLIGHT, result
    return result


def kill_a_sender(stack, rng: random.Random, done) -> int:
    """Wait for a live batch and some progress, then SIGKILL it: at once, or mid-request."""
    target = stack.fake.stats()["accepted"] + rng.randint(1, 12)
    wait_until(lambda: stack.fake.stats()["accepted"] >= target or done(), 60, "sends to progress")
    if rng.random() < 0.5:
        # The fake records a send when it arrives and answers after its latency: a request in
        # flight now has been sent, and the batch that sent it has not checkpointed it yet.
        wait_until(lambda: stack.fake.stats()["in_flight"] > 0 or done(), 30, "a request in flight")
    senders = live_senders(stack)
    if not senders:
        return 0
    victim = rng.choice(senders)
    try:
        os.kill(victim["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return 0
    return 1


@pytest.mark.parametrize("seed", [1, 2])
def test_random_kills_lose_nothing_and_send_nothing_twice(make_stack, seed):
    rng = random.Random(seed)
    stack = make_stack(fake_latency_ms=30, max_in_flight=MAX_IN_FLIGHT, batch_seconds=60)
    campaign = new_campaign(400, rate=160)
    service.send(campaign.id, settings())
    kills = 0
    for _ in range(12):
        kills += kill_a_sender(stack, rng, completed(campaign))
    wait_until(completed(campaign), 180, "the campaign to complete after the kills")
    result = assert_invariants(campaign, stack.fake, kills)
    print(f"seed {seed}: {kills} kills, statuses {dict(result['statuses'])}")
    assert kills >= 10
    assert result["statuses"]["sent"] + result["in_doubt"] == 400
    # The batches that followed a death recounted: the O(1) counters match the recipients.
    counts = status(campaign)["counts"]
    assert (counts["sent"], counts["in_doubt"], counts["pending"]) == (
        result["statuses"]["sent"], result["in_doubt"], 0)


def test_kill_between_post_and_checkpoint_leaves_in_doubt_never_resent(make_stack):
    stack = make_stack(fake_latency_ms=10, max_in_flight=MAX_IN_FLIGHT)
    campaign = new_campaign(60)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    kill_while_a_response_is_held(stack)
    in_flight_at_kill = stack.fake.stats()["in_flight"]
    stack.fake.configure(latency_ms=10)
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = assert_invariants(campaign, stack.fake, kills=1)
    # The held requests reached the provider: in doubt, not resent. Claims whose POST had not
    # left yet are in doubt too (nobody can tell): never more than the batch's in-flight limit.
    assert in_flight_at_kill <= result["in_doubt"] <= MAX_IN_FLIGHT
    assert result["duplicates"] == {}


def test_in_doubt_is_resent_after_grace_under_policy_resend(make_stack):
    stack = make_stack(fake_latency_ms=10, in_doubt_grace_seconds=1.0)
    campaign = new_campaign(40, in_doubt_policy="resend")
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 5, 30, "some sends")
    kill_while_a_response_is_held(stack)
    stack.fake.configure(latency_ms=10)
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = assert_invariants(campaign, stack.fake, kills=1)
    # At-least-once: every recipient ends sent, and only the in-doubt ones may have gone twice.
    assert result["statuses"] == {"sent": 40}
    assert result["duplicates"], "the in-doubt sends were resent after the grace period"


def test_zombie_frozen_past_its_lease_sends_nothing_after_takeover(make_stack):
    stack = make_stack(fake_latency_ms=20, lease_seconds=5.0, batch_seconds=60)
    campaign = new_campaign(150)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    zombie = live_senders(stack)[0]
    gen_before = int(Shard.get(*Shard.key(campaign.id, 0), consistent_read=True).lease_gen)
    os.kill(zombie["pid"], signal.SIGSTOP)
    try:
        # Recovery sees the lease expire and hands the shard to a new batch.
        wait_until(lambda: any(s["pid"] != zombie["pid"] for s in live_senders(stack)), 60, "a takeover")
        assert int(Shard.get(*Shard.key(campaign.id, 0), consistent_read=True).lease_gen) > gen_before
        accepted_at_wake = stack.fake.stats()["accepted"]
    finally:
        os.kill(zombie["pid"], signal.SIGCONT)
    wait_until(lambda: all(s["pid"] != zombie["pid"] for s in live_senders(stack)), 60, "the zombie to exit")
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = assert_invariants(campaign, stack.fake, kills=1)
    assert result["duplicates"] == {}
    assert accepted_at_wake < 150 or result["statuses"]["sent"] == 150


def test_the_same_event_delivered_twice_sends_nothing_extra(make_stack):
    from campaigns import invoker
    from campaigns import lease as leases

    stack = make_stack(fake_latency_ms=10)
    campaign = new_campaign(50)
    service._wake(campaign.id, [0])
    service._transition(campaign.id, "send", [service.Campaign.open_shards.set({0})])
    token = leases.new_token()
    leases.hand_to(campaign.id, 0, token, leases.free_or_expired(time.time()), settings())
    event = invoker.sender_event(campaign.id, 0, token)
    invoker.invoke_sender(settings(), event)
    invoker.invoke_sender(settings(), event)  # Lambda's at-least-once delivery
    wait_until(completed(campaign), 60, "the campaign to complete")
    wait_until(lambda: senders_stopped(stack), 30, "both deliveries to end")
    result = assert_invariants(campaign, stack.fake, kills=0)
    assert result["duplicates"] == {}
    assert result["statuses"] == {"sent": 50}
    assert stack.fake.stats()["accepted"] == 50


def test_throughput_storm_slows_the_sender_and_fails_nobody(make_stack):
    stack = make_stack(fake_latency_ms=5)
    stack.fake.configure(rate_cap_mps=15)
    campaign = new_campaign(90, rate=80)
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 120, "the campaign to complete under throttling")
    result = assert_invariants(campaign, stack.fake, kills=0)
    assert result["statuses"] == {"sent": 90}
    assert stack.fake.stats()["by_code"].get("130429", 0) > 0, "the storm happened"


def test_fatal_error_pauses_the_campaign_and_stops_sending(make_stack):
    stack = make_stack(fake_latency_ms=20, max_in_flight=MAX_IN_FLIGHT)
    campaign = new_campaign(200)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    stack.fake.configure(fatal_code=190)
    wait_until(lambda: status(campaign)["status"] == "paused", 30, "the campaign to pause")
    wait_until(lambda: senders_stopped(stack), 30, "the batches to stop")
    assert "190" in status(campaign)["paused_reason"]
    refused = stack.fake.stats()["by_code"]["190"]
    assert refused <= MAX_IN_FLIGHT  # only what was in flight when the first 190 came back
    stack.fake.configure(fatal_code=None)
    assert stack.fake.stats()["by_code"]["190"] == refused
    service.resume(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete after resume")
    result = assert_invariants(campaign, stack.fake, kills=0)
    assert result["statuses"] == {"sent": 200}
