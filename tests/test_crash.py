"""The crash suite: sender batches are real OS processes, killed with SIGKILL (or frozen with
SIGSTOP) at random points, including between a POST and its checkpoint. Afterwards, what the
fake Graph API received is checked against the store: nothing lost, nothing sent twice.

Random runs are reproducible from their seed: `CRASH_SEED=7 .venv/bin/python -m pytest
tests/test_crash.py -k random` replays seed 7's kill points and seeds the batches' own draws (the
processes' timing is the machine's). Each run prints its seed and kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter

import pytest
import requests

from campaigns import lifecycle, service
from campaigns.config import settings
from campaigns.models import Campaign, Shard
from local.fakegraph.wire import signature_header, status_webhook
from tests.helpers import audit, live_senders, new_campaign, recipients, senders_stopped, status, wait_until

pytestmark = pytest.mark.crash

MAX_IN_FLIGHT = 8
SEEDS = [int(os.environ["CRASH_SEED"])] if os.environ.get("CRASH_SEED") else [1, 2]


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
    # Per kill, not pooled: the recipients each dead batch left in doubt (named by its claim).
    doubted_by = Counter(r.claimed_by for r in recipients(campaign) if r.status == "in_doubt")
    assert len(doubted_by) <= kills and all(n <= MAX_IN_FLIGHT for n in doubted_by.values()), doubted_by
    return result


def killed_in_history(stack, pids: list[int]) -> list[int]:
    """The pids the runtime recorded as dead by SIGKILL (Lambda's "signal: killed")."""
    return [h["pid"] for h in stack.runtime.history()
            if h["pid"] in pids and h["outcome"] == "killed" and h["exit_code"] == -signal.SIGKILL]


def kill_a_sender(stack, rng: random.Random, done) -> dict | None:
    """Wait for a live batch and some progress, then SIGKILL it: at once, or mid-request.
    Returns the kill point (what the fake had accepted, the victim, whether a request was in flight)."""
    target = stack.fake.stats()["accepted"] + rng.randint(1, 12)
    wait_until(lambda: stack.fake.stats()["accepted"] >= target or done(), 60, "sends to progress")
    mid_request = rng.random() < 0.5
    if mid_request:
        # The fake records a send when it arrives and answers after its latency: a request in
        # flight now has been sent, and the batch that sent it has not checkpointed it yet.
        wait_until(lambda: stack.fake.stats()["in_flight"] > 0 or done(), 30, "a request in flight")
    senders = live_senders(stack)
    if not senders:
        return None
    victim = rng.choice(sorted(senders, key=lambda s: s["started_at"]))
    point = {"accepted": stack.fake.stats()["accepted"], "pid": victim["pid"], "mid_request": mid_request}
    try:
        os.kill(victim["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return None
    return point


@pytest.mark.parametrize("seed", SEEDS)
def test_random_kills_lose_nothing_and_send_nothing_twice(make_stack, seed):
    rng = random.Random(seed)
    stack = make_stack(fake_latency_ms=30, max_in_flight=MAX_IN_FLIGHT, batch_seconds=60, random_seed=seed)
    campaign = new_campaign(400, rate=160)
    service.send(campaign.id, settings())
    points = [p for p in (kill_a_sender(stack, rng, completed(campaign)) for _ in range(12)) if p]
    print(f"seed {seed} (replay: CRASH_SEED={seed}): kill points {points}")
    wait_until(completed(campaign), 180, "the campaign to complete after the kills")
    # Every kill counted is one the runtime saw die by SIGKILL, as Lambda would report it.
    kills = len(killed_in_history(stack, [p["pid"] for p in points]))
    assert kills == len(points) >= 10, (kills, points)
    result = assert_invariants(campaign, stack.fake, kills)
    print(f"seed {seed}: {kills} kills, statuses {dict(result['statuses'])}")
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


GRACE_SECONDS = 8.0  # longer than a recovery tick (3 s) and a batch's start: a resend without it comes sooner


def test_in_doubt_is_resent_after_grace_under_policy_resend(make_stack):
    stack = make_stack(fake_latency_ms=10, in_doubt_grace_seconds=GRACE_SECONDS)
    campaign = new_campaign(40, in_doubt_policy="resend")
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 5, 30, "some sends")
    kill_while_a_response_is_held(stack)
    stack.fake.configure(latency_ms=10)
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = assert_invariants(campaign, stack.fake, kills=1)
    # At-least-once: every recipient ends sent, and only the in-doubt ones may have gone twice.
    assert result["statuses"] == {"sent": 40}
    assert result["duplicates"], "the in-doubt sends were resent"
    # ... and not before the grace period a webhook had to prove the first send.
    doubted = {r.callback_key: r.in_doubt_at for r in recipients(campaign) if r.in_doubt_at is not None}
    last_arrival = {s["callback"]: s["at"] for s in stack.fake.sends()}
    early = {k: round(last_arrival[k] - doubted[k], 2) for k in result["duplicates"]
             if last_arrival[k] < doubted[k] + GRACE_SECONDS}
    assert early == {}, f"resent this many seconds after being called in doubt: {early}"


def test_zombie_frozen_past_its_lease_starts_no_send_after_it_wakes(make_stack):
    """A batch frozen (SIGSTOP) past its lease: the schedule's tick takes the shard over while the
    zombie still lives (its deadline is a minute away, so no on-failure record can do it), and once
    it wakes, its own clock stops it before any POST it had not yet begun.

    One it had begun may still go out: the clock check and the socket write are a few bytecodes
    apart (a GIL switch, under load), and a freeze between them cannot be told from one inside the
    POST. That is the send in flight a takeover settles in doubt (docs/design.md, "The lease"): it
    was claimed before the freeze, there is at most one per worker, and it is never sent twice."""
    stack = make_stack(fake_latency_ms=20, lease_seconds=5.0, batch_seconds=60, max_in_flight=MAX_IN_FLIGHT)
    campaign = new_campaign(300, rate=20)  # 15 s of sends: the freeze lands mid-campaign
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    zombie = live_senders(stack)[0]
    shard = Shard.get(*Shard.key(campaign.id, 0), consistent_read=True)
    zombie_owner, gen_before = shard.lease_owner, int(shard.lease_gen)
    os.kill(zombie["pid"], signal.SIGSTOP)
    frozen_at = time.time()
    try:
        wait_until(lambda: any(s["pid"] != zombie["pid"] for s in live_senders(stack)), 30, "a takeover by the tick")
        assert int(Shard.get(*Shard.key(campaign.id, 0), consistent_read=True).lease_gen) > gen_before
    finally:
        woke_at = time.time()
        os.kill(zombie["pid"], signal.SIGCONT)
    wait_until(lambda: all(s["pid"] != zombie["pid"] for s in live_senders(stack)), 60, "the zombie to exit")
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = assert_invariants(campaign, stack.fake, kills=1)
    assert result["duplicates"] == {}
    claimed_when = {r.callback_key: r.claimed_at for r in recipients(campaign) if r.claimed_by == zombie_owner}
    late = {s["callback"]: claimed_when[s["callback"]] for s in stack.fake.sends()
            if s["at"] > woke_at and s["callback"] in claimed_when}
    begun_after_the_freeze = {key: round(at - frozen_at, 3) for key, at in late.items() if at > frozen_at}
    assert begun_after_the_freeze == {}, "the zombie started a send after it woke (seconds after the freeze)"
    assert len(late) <= MAX_IN_FLIGHT, late


def test_a_killed_batch_reported_by_lambda_is_taken_over_with_no_schedule(make_stack):
    """Invariant 5's on-failure path, alone: with no recovery schedule, only the runtime's on-failure
    record (Lambda's destination) can start a new batch for the shard of a SIGKILLed one."""
    stack = make_stack(fake_latency_ms=20, batch_seconds=60, with_scheduler=False)
    campaign = new_campaign(200)
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    victim = live_senders(stack)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(completed(campaign), 60, "the campaign to complete after the reported death")
    assert killed_in_history(stack, [victim["pid"]]) == [victim["pid"]]
    reports = [h for h in stack.runtime.history() if h["function"] == "recovery"]
    assert [(r["result"] or {}).get("taken_over") for r in reports] == [1]
    assert_invariants(campaign, stack.fake, kills=1)


def test_the_same_event_delivered_twice_sends_nothing_extra(make_stack):
    from campaigns import invoker
    from campaigns import lease as leases

    stack = make_stack(fake_latency_ms=10)
    campaign = new_campaign(50)
    lifecycle.wake(campaign.id, [0])
    lifecycle.transition(campaign.id, "send", [Campaign.open_shards.set({0})])
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


STORM_SENDS = 180  # 12 s at the fake's cap of 15 mps: long enough that not slowing down costs more than slowing


def test_throughput_storm_slows_the_sender_and_fails_nobody(make_stack):
    stack = make_stack(fake_latency_ms=5)
    stack.fake.configure(rate_cap_mps=15)
    campaign = new_campaign(STORM_SENDS, rate=80)
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 120, "the campaign to complete under throttling")
    result = assert_invariants(campaign, stack.fake, kills=0)
    assert result["statuses"] == {"sent": STORM_SENDS}
    refused = stack.fake.stats()["by_code"].get("130429", 0)
    assert refused > 0, "the storm happened"
    print(f"{refused} refusals for {STORM_SENDS} sends")
    # The pace came down to the number's limit. At the campaign's 80 mps into 15, a sender that did
    # not slow down is refused twice or more for every send accepted, all along; one that halves its
    # pace on a storm of refusals pays once, for the few seconds it takes to get there.
    assert refused < STORM_SENDS, f"{refused} refusals for {STORM_SENDS} sends"


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
    service.resume(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete after resume")
    result = assert_invariants(campaign, stack.fake, kills=0)
    assert result["statuses"] == {"sent": 200}


# -- policy auto: in-doubt sends resolved from the status webhooks -----------------------------------

def webhooks_flowing(make_stack, **overrides):
    """A stack whose fake posts signed status webhooks (sent, delivered, read) to its /webhook."""
    stack = make_stack(api_port=0, fake_webhook_failed_ratio=0.0, **overrides)
    stack.start_gateway(dashboard=False)
    return stack


@pytest.mark.parametrize("seed", SEEDS)
def test_policy_auto_sends_every_recipient_exactly_once_through_kills_once_webhooks_caught_up(make_stack, seed):
    """Ten SIGKILLs of live batches: what was on the wire is proven sent by its own status, what
    never left is proven absent by later sends' statuses and sent once. Completion waits for both."""
    rng = random.Random(seed)
    stack = webhooks_flowing(make_stack, fake_latency_ms=30, max_in_flight=MAX_IN_FLIGHT, batch_seconds=60,
                             random_seed=seed)
    campaign = new_campaign(400, rate=160, in_doubt_policy="auto")
    service.send(campaign.id, settings())
    points = [p for p in (kill_a_sender(stack, rng, completed(campaign)) for _ in range(12)) if p]
    wait_until(completed(campaign), 180, "the campaign to complete after the kills")
    kills = len(killed_in_history(stack, [p["pid"] for p in points]))
    assert kills == len(points) >= 10, (kills, points)
    result = audit(campaign, stack.fake)
    received = Counter(s["callback"] for s in stack.fake.sends())
    assert result["lost"] == 0 and result["in_doubt"] == 0, result
    assert result["duplicates"] == {} and stack.fake.stats()["duplicates"] == 0, result
    assert sorted(received) == sorted(r.callback_key for r in recipients(campaign))  # each exactly once
    answer = status(campaign)
    print(f"seed {seed}: {kills} kills, in doubt resolved {answer['in_doubt_resolution']}")
    assert answer["counts"]["in_doubt"] == 0 and answer["in_doubt_resolution"]["duplicates"] == 0
    assert answer["in_doubt_resolution"]["waiting_for_proof"] == 0


def test_policy_auto_resends_nothing_while_webhooks_are_silent(make_stack):
    """No webhook ever arrives: absence is never proven, so nothing is sent again; the shard waits
    for a proof at most PROOF_WAIT_SECONDS and the campaign completes with them in doubt."""
    stack = make_stack(fake_latency_ms=10, max_in_flight=MAX_IN_FLIGHT, proof_wait_seconds=8.0)
    campaign = new_campaign(60, in_doubt_policy="auto")
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    kill_while_a_response_is_held(stack)
    stack.fake.configure(latency_ms=10)
    wait_until(completed(campaign), 90, "the campaign to complete once the wait for proof is over")
    result = assert_invariants(campaign, stack.fake, kills=1)
    assert result["in_doubt"] >= 1 and result["duplicates"] == {}, result
    doubted = [r for r in recipients(campaign) if r.status == "in_doubt"]
    assert all(r.absent_proven_at is None for r in doubted)
    assert status(campaign)["in_doubt_resolution"]["resent_after_absence"] == 0


def test_a_late_status_for_a_send_resent_after_absence_is_counted_as_a_duplicate(make_stack):
    """The residual risk: sends that reached Meta, whose statuses Meta failed to deliver and retries
    later, while the statuses of the sends after them arrive. Their batch died holding their answers:
    absence is "proven", they are sent again; the late statuses then show both sends happened, and
    each such recipient is counted once as a duplicate."""
    stack = webhooks_flowing(make_stack, fake_latency_ms=10, max_in_flight=MAX_IN_FLIGHT)
    webhook_url = f"{stack.gateway.url}/webhook"
    campaign = new_campaign(200, rate=40, in_doubt_policy="auto")
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.stats()["accepted"] >= 10, 30, "some sends")
    before = stack.fake.stats()["accepted"]
    stack.fake.configure(webhook_url=None)  # from here, statuses are lost for now (to be retried)
    kill_while_a_response_is_held(stack)
    lost_statuses = stack.fake.sends(since=before)
    stack.fake.configure(latency_ms=10, webhook_url=webhook_url)
    wait_until(completed(campaign), 120, "the campaign to complete")
    received = Counter(s["callback"] for s in stack.fake.sends())
    resent = [r for r in recipients(campaign) if r.absent_proven_at is not None]
    assert resent and all(received[r.callback_key] == 2 for r in resent if r.callback_key in
                          {s["callback"] for s in lost_statuses})
    for record in lost_statuses:  # Meta's retries of the statuses it could not deliver, late
        body = json.dumps(status_webhook(record, "sent")).encode()
        answer = requests.post(webhook_url, data=body, timeout=10, headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature_header(body, stack.secret["app_secret"])})
        assert answer.status_code == 200
    twice = {r.callback_key for r in recipients(campaign) if r.duplicate_at is not None}
    assert twice == {key for key, n in received.items() if n == 2} != set()
    assert status(campaign)["in_doubt_resolution"]["duplicates"] == len(twice)
