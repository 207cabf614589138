"""End-to-end sending through the local stack: real sender processes, moto, the fake Graph API."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import requests
from pynamodb.exceptions import UpdateError

from campaigns import achieved, heartbeat, invoker, ledger, lifecycle, numbers, sender, service
from campaigns import lease as leases
from campaigns.config import settings
from campaigns.models import Campaign, Recipient, Shard, recipient_sk, shard_pk
from campaigns.ratelimit import TRANSIT_SPREAD_SECONDS, RateLimiter
from campaigns.sending import Kind, OneSend
from campaigns.whatsapp import WhatsAppClient
from local.fakegraph import FakeGraph
from local.fakegraph.wire import signature_header
from local.storage import create_secret
from tests.helpers import TEMPLATE, audit, live_senders, new_campaign, recipients, status, wait_until


def completed(campaign):
    return lambda: status(campaign)["status"] == "completed"


def _one_shard_event(make_stack, monkeypatch, recipients_count: int):
    """A sending campaign of one shard whose batch event this test runs itself, in this process."""
    stack = make_stack(fake_latency_ms=5, with_scheduler=False)
    campaign = new_campaign(recipients_count)
    events: list[dict] = []
    monkeypatch.setattr(invoker, "invoke_sender", lambda _settings, event: events.append(event) or True)
    service.send(campaign.id, settings())  # reserves the shard for an event, which the test runs
    return stack, campaign, events[0]


def test_campaign_is_sent_completely_once(make_stack):
    stack = make_stack(fake_latency_ms=10)
    campaign = new_campaign(120, rate=160)  # two shards
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete")
    result = audit(campaign, stack.fake)
    assert result["lost"] == 0
    assert result["duplicates"] == {}
    assert result["statuses"] == {"sent": 120}
    assert status(campaign)["counts"]["sent"] == 120


def test_a_slow_provider_gets_as_many_sends_in_flight_as_its_pace_needs(make_stack):
    """At 20 mps and a second per POST, holding the pace takes ~20 sends in flight (Little's law):
    the window grows past the 8 a fixed window allowed, and stays within MAX_IN_FLIGHT."""
    stack = make_stack(fake_latency_ms=1000, max_in_flight=32)
    campaign = new_campaign(100, rate=20)
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete")
    assert 8 < stack.fake.stats()["peak_in_flight"] <= 32
    result = audit(campaign, stack.fake)
    assert result["statuses"] == {"sent": 100} and result["duplicates"] == {}


def test_the_status_reports_the_rate_the_provider_counts_not_the_pace(make_stack):
    """A provider slowed to 400 ms a send holds a shard of 8 sends in flight under 8 / 0.32 s = 25
    msg/s (Little's law, at the fastest draw of its ±20 %), far under its pace of 78.4: the status's
    current_rate must be the sends the fake counted over the same window, and the pace a field apart.

    Tolerance: the two count the same sends, the fake when each arrives and the batch when it
    collects each accepted send's checkpoint. Between the two moments a send holds one of the
    batch's window slots, so at any instant the fake is ahead of the batch by 0 to MAX_IN_FLIGHT
    sends; each figure is a difference of such counts at the window's two ends, so they differ by
    at most MAX_IN_FLIGHT sends over the window, whatever the speed of the machine.
    """
    stack = make_stack(fake_latency_ms=400, fake_latency_jitter=0.2, with_scheduler=False,
                       batch_seconds=120)  # one batch throughout: its window is never younger than it
    campaign = new_campaign(300)
    service.send(campaign.id, settings())
    window = achieved.WINDOW_SECONDS

    def a_status_over_a_whole_window():
        shard = Shard.get(*Shard.key(campaign.id, 0), consistent_read=True)
        sends = stack.fake.sends()
        if not sends or shard.measured_at is None or float(shard.measured_at) < sends[0]["at"] + window:
            return None  # not sending for a whole window yet
        answer = status(campaign)
        if Shard.get(*Shard.key(campaign.id, 0), consistent_read=True).measured_at != shard.measured_at:
            return None  # a heartbeat landed between the reads
        return float(shard.measured_at), answer

    measured_at, answer = wait_until(a_status_over_a_whole_window, 60, "a status after a window of sending")
    counted = sum(1 for s in stack.fake.sends() if measured_at - window < s["at"] <= measured_at)
    in_flight = stack.max_in_flight  # the window ceiling the stack gave its functions
    assert answer["current_rate"] == pytest.approx(counted / window, abs=in_flight / window)
    assert answer["pace"] == round(80 / (1 + TRANSIT_SPREAD_SECONDS), 2)  # the shard stores it rounded
    assert counted / window + in_flight / window < answer["pace"]  # the run tells the two apart
    assert answer["eta_seconds"] == round(answer["counts"]["pending"] / answer["current_rate"])
    service.cancel(campaign.id)


def test_sends_go_on_while_a_heartbeat_waits_on_the_store(make_stack, monkeypatch):
    """The heartbeat has its own thread: a slow renewal must not stop the batch from sending."""
    stack, campaign, event = _one_shard_event(make_stack, monkeypatch, 60)

    renew, sent_while_renewing = leases.renew, []

    def slow_renew(lease, *args, **kwargs):
        # The first renewal is held until the batch has made 10 more sends (or 10 s passed): a
        # store that is slow to answer.
        if sent_while_renewing:
            return renew(lease, *args, **kwargs)
        before = stack.fake.stats()["accepted"]
        with contextlib.suppress(AssertionError):  # a timeout: the assertion below says what went wrong
            wait_until(lambda: stack.fake.stats()["accepted"] >= min(before + 10, 60), 10, "sends meanwhile")
        sent_while_renewing.append(stack.fake.stats()["accepted"] - before)
        return renew(lease, *args, **kwargs)

    monkeypatch.setattr(leases, "renew", slow_renew)
    report = sender.run_batch(event, lambda: 60.0, settings())
    assert report["outcome"] == "done" and report["sent"] == 60
    assert sent_while_renewing[0] >= 10  # the first heartbeat starts before the first send
    assert status(campaign)["status"] == "completed"
    assert audit(campaign, stack.fake)["duplicates"] == {}


def test_a_store_error_in_the_heartbeat_fails_the_batch_once_its_sends_are_checkpointed(make_stack, monkeypatch):
    stack, campaign, event = _one_shard_event(make_stack, monkeypatch, 200)

    renew, renewals = leases.renew, []

    def failing_renew(lease, *args, **kwargs):
        renewals.append(lease)
        if len(renewals) == 3:
            raise RuntimeError("the store is unavailable")
        return renew(lease, *args, **kwargs)

    monkeypatch.setattr(leases, "renew", failing_renew)
    with pytest.raises(RuntimeError, match="unavailable"):
        sender.run_batch(event, lambda: 60.0, settings())
    statuses = Counter(r.status for r in recipients(campaign))
    assert statuses["sending"] == 0  # every claim got its checkpoint before the batch failed
    assert 0 < statuses["sent"] == stack.fake.stats()["accepted"] < 200


def _batch_with_a_hook_after_renewal(make_stack, monkeypatch, recipients_count: int, after: int, hook):
    """Run one batch in this process; `hook` runs on the heartbeat thread right after renewal
    number `after` landed. Returns the batch's report, the renewals that landed (the sends the fake
    had by each), the campaign and the stack."""
    stack, campaign, event = _one_shard_event(make_stack, monkeypatch, recipients_count)  # 80 mps: seconds of heartbeats
    renew, renewals = leases.renew, []

    def hooked_renew(lease, *args, **kwargs):
        renew(lease, *args, **kwargs)
        renewals.append(stack.fake.stats()["accepted"])  # sends the fake had when this one landed
        if len(renewals) == after:
            hook(campaign)

    monkeypatch.setattr(leases, "renew", hooked_renew)
    report = sender.run_batch(event, lambda: 60.0, settings())
    return report, renewals, campaign, stack


def test_a_pause_reaches_the_batch_at_its_next_renewal(make_stack, monkeypatch):
    """pause writes the status, then a halt request on each shard: the next renewal is refused,
    and the batch looks at its campaign then (it does not read it every heartbeat)."""
    report, renewals, campaign, stack = _batch_with_a_hook_after_renewal(
        make_stack, monkeypatch, 400, after=2, hook=lambda campaign: service.pause(campaign.id))
    assert report["outcome"] == "halted"
    # The refused renewal raised (not counted), its retry landed, the look saw the pause: one more.
    assert len(renewals) == 3 < heartbeat.STATUS_LOOK_EVERY
    assert 0 < stack.fake.stats()["accepted"] < 400
    assert status(campaign)["status"] == "paused"
    assert status(campaign)["counts"]["sent"] == stack.fake.stats()["accepted"]  # progress flushed


def test_a_pause_that_died_before_its_halt_request_is_seen_at_the_periodic_look(make_stack, monkeypatch):
    """The state a pause leaves when its API call dies between the status and the halt requests."""
    report, renewals, campaign, stack = _batch_with_a_hook_after_renewal(
        make_stack, monkeypatch, 1200, after=1, hook=lambda campaign: lifecycle.transition(campaign.id, "pause"))
    assert report["outcome"] == "halted"
    assert len(renewals) == heartbeat.STATUS_LOOK_EVERY  # the first look after the status was written
    assert stack.fake.stats()["accepted"] < 1200
    assert audit(campaign, stack.fake)["duplicates"] == {}


def test_a_pause_undone_by_a_resume_before_the_batch_looked_does_not_stop_it(make_stack, monkeypatch):
    def pause_and_resume(campaign):
        service.pause(campaign.id)
        service.resume(campaign.id, settings())  # the shard is held: resume leaves it to this batch

    report, renewals, campaign, stack = _batch_with_a_hook_after_renewal(
        make_stack, monkeypatch, 200, after=1, hook=pause_and_resume)
    assert report["outcome"] == "done" and report["sent"] == 200
    assert status(campaign)["status"] == "completed"
    assert audit(campaign, stack.fake)["duplicates"] == {}


def test_a_claim_the_store_did_not_answer_is_retried_not_left_in_doubt(make_stack, monkeypatch):
    """A claim whose answer never came (a store timeout): nothing was sent, so nothing may be lost."""
    stack, campaign, event = _one_shard_event(make_stack, monkeypatch, 60)
    claim, unanswered = ledger.claim, []

    def claim_with_lost_answers(rec, owner, now):
        if rec.seq in (5, 6) and rec.seq not in unanswered:
            unanswered.append(rec.seq)
            if rec.seq == 5:
                claim(rec, owner, now)  # it lands, its answer is lost; seq 6's never reaches the store
            raise UpdateError("Failed to update item: Read timeout on endpoint URL")
        return claim(rec, owner, now)

    monkeypatch.setattr(ledger, "claim", claim_with_lost_answers)
    report = sender.run_batch(event, lambda: 60.0, settings())
    assert unanswered == [5, 6]
    assert report["outcome"] == "done" and report["sent"] == 60
    assert Counter(r.status for r in recipients(campaign)) == {"sent": 60}
    assert audit(campaign, stack.fake)["duplicates"] == {}


def sender_history(stack) -> list[dict]:
    return [h for h in stack.runtime.history() if h["function"] == "sender"]


def test_a_campaign_longer_than_a_batch_completes_through_hand_offs_alone(make_stack):
    """Invariant 6: with no recovery schedule, only each batch's own hand-off can start the next one.
    Every batch but the last stops on its time and hands off to hop + 1; the last finishes the shard."""
    stack = make_stack(fake_latency_ms=5, batch_seconds=12, with_scheduler=False)
    campaign = new_campaign(400, rate=40)  # one shard, ~10 s of sends: more than one batch can send
    service.send(campaign.id, settings())
    try:
        wait_until(completed(campaign), 120, "the campaign to complete through hand-offs")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; batches: {[b['result'] or b['error'] for b in sender_history(stack)]}") from None
    wait_until(lambda: stack.runtime.wait_idle(0) or None, 30, "the last batch to exit")
    batches = sender_history(stack)
    outcomes = [(b["result"] or {}).get("outcome") for b in batches]
    hops = [(b["result"] or {}).get("hop") for b in batches]
    assert len(batches) >= 2, outcomes
    assert outcomes == ["time"] * (len(batches) - 1) + ["done"], outcomes
    assert hops == list(range(len(batches))), hops
    result = audit(campaign, stack.fake)
    assert result["statuses"] == {"sent": 400} and result["duplicates"] == {}


def test_a_batch_out_of_time_before_any_progress_does_not_hand_off(make_stack, monkeypatch):
    """The hop guard: a batch that made no progress releases the shard for recovery to look at
    when it is due, rather than invoking a next batch that would do the same, for ever."""
    stack, campaign, event = _one_shard_event(make_stack, monkeypatch, 20)
    handed: list[dict] = []
    monkeypatch.setattr(invoker, "invoke_sender", lambda _settings, event: handed.append(event) or True)
    report = sender.run_batch(event, lambda: 0.0, settings())  # its time is up from the start
    assert report["outcome"] == "time"
    assert handed == []
    shard = Shard.get(*Shard.key(campaign.id, 0), consistent_read=True)
    assert shard.lease_owner is None and shard.due_at is not None  # released, due for recovery
    assert stack.fake.stats()["accepted"] == 0


def test_a_batch_whose_own_clock_passed_its_lease_between_claim_and_post_does_not_post(make_stack, monkeypatch):
    """Invariant 2's own-clock check, alone: a batch frozen (GC, SIGSTOP, a stalled host) after a claim
    and before its POST wakes past its lease, which recovery took over meanwhile; it must give the claim
    back, not send. The freeze: right after seq 10's claim lands, the lease module's clock jumps past the
    deadline and the shard is handed to another invocation, as recovery's takeover does."""
    stack, campaign, event = _one_shard_event(make_stack, monkeypatch, 40)
    frozen = FrozenClock()
    monkeypatch.setattr(leases, "time", frozen)
    claim = ledger.claim

    def claim_then_freeze(rec, owner, now):
        claimed = claim(rec, owner, now)
        if rec.seq == 10:  # taken over first: a renewal from now on is refused, whenever it started
            later = time.time() + 3600
            leases.hand_to(campaign.id, 0, leases.new_token(), leases.free_or_expired(later), settings(), now=later)
            frozen.jump(3600)
        return claimed

    monkeypatch.setattr(ledger, "claim", claim_then_freeze)
    report = sender.run_batch(event, lambda: 60.0, settings())
    assert report["outcome"] == "lease_lost"
    tenth = next(r for r in recipients(campaign) if r.seq == 10)
    received = {s["callback"] for s in stack.fake.sends()}
    assert tenth.callback_key not in received
    assert tenth.status == "pending"  # given back: the next holder sends it


class FrozenClock:
    """The time module as a process frozen for a while sees it on waking: monotonic time jumped."""

    def __init__(self):
        self.offset = 0.0

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time()


def test_a_batch_longer_than_its_lease_keeps_it_by_heartbeats(make_stack):
    """Invariant 5's heartbeat: a live batch renews its lease, so recovery never takes over a shard
    that is being sent, however long the batch runs past one lease period."""
    stack = make_stack(fake_latency_ms=5, lease_seconds=6.0, batch_seconds=60)
    campaign = new_campaign(400, rate=40)  # ~10 s of sends: well past the 6-s lease
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 120, "the campaign to complete")
    wait_until(lambda: stack.runtime.wait_idle(0) or None, 30, "the batch to exit")
    batches = sender_history(stack)
    assert [(b["result"] or {}).get("outcome") for b in batches] == ["done"], batches
    assert [h for h in stack.runtime.history() if h["function"] == "recovery" and (h["result"] or {}).get(
        "taken_over")] == []
    assert audit(campaign, stack.fake)["statuses"] == {"sent": 400}


def test_a_pair_rate_refusal_waits_six_seconds_and_the_campaign_completes_only_after_it(make_stack):
    """131056 (pair rate): Meta allows about one message per 6 s to one user, so the retry waits that long
    even when the backoff's own draw is shorter (the stack's backoff is 0.2-5 s). Meanwhile the other
    shard finishes: the campaign is completed only once the last shard has nothing open (invariant 1)."""
    stack = make_stack(fake_latency_ms=5)
    campaign = new_campaign(40, rate=160)  # two shards
    refused = next(r for r in recipients(campaign) if r.PK.endswith("#SHARD#1"))
    stack.fake.configure(reject_numbers={refused.phone: 131056})
    service.send(campaign.id, settings())
    wait_until(lambda: stack.fake.rejected(), 30, "the pair-rate refusal")
    stack.fake.configure(reject_numbers={})
    wait_until(completed(campaign), 60, "the campaign to complete")
    assert audit(campaign, stack.fake)["lost"] == 0, "completed with a recipient still open"
    refused_at = stack.fake.rejected()[0]["at"]
    resent_at = next(s["at"] for s in stack.fake.sends() if s["callback"] == refused.callback_key)
    assert resent_at - refused_at >= 6.0


def test_a_retryable_error_is_retried_by_the_sender_alone_one_request_per_attempt(make_stack):
    """Invariant 7, one retry layer: a recipient answered 500 / 131000 every time reaches the provider
    exactly MAX_ATTEMPTS times (the HTTP session retries nothing of its own), then fails with the code."""
    stack = make_stack(fake_latency_ms=5, max_attempts=3, backoff_base_seconds=0.05, backoff_cap_seconds=0.2)
    campaign = new_campaign(4)
    failing = recipients(campaign)[0]
    stack.fake.configure(reject_numbers={failing.phone: 131000})
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete")
    tries = [r for r in stack.fake.rejected() if r["callback"] == failing.callback_key]
    assert [(r["code"], r["http_status"]) for r in tries] == [(131000, 500)] * 3
    failing.refresh()
    assert (failing.status, failing.error_code) == ("failed", 131000)


def test_a_recipient_is_not_claimed_while_its_send_waits_for_a_rate_slot(table):
    """Invariant 3's gap is what may be on the wire: a kill during the wait for a rate slot must find
    the recipient still pending (claimed, it would be left in doubt though it was never sent)."""
    waiting, go = threading.Event(), threading.Event()

    def slot_wait(seconds):  # the limiter's own sleep: the send is waiting for its slot now
        waiting.set()
        assert go.wait(30)

    with FakeGraph(latency_ms=1) as fake:
        cfg = replace(settings(), graph_api_url=fake.url)
        rec = Recipient(shard_pk("c1", 0), recipient_sk(3), phone="919876543210", import_id="i")
        rec.save()
        limiter = RateLimiter(1.0, sleep=slot_wait)
        limiter.reserve()  # the slot now goes to another send: this one waits a second for the next
        lease = leases.Lease("c1", 0, "batch-a", 1, time.time() + 60, send_deadline=time.monotonic() + 60)
        campaign = Campaign(*Campaign.key("c1"), phone_number_id="1", template=TEMPLATE)
        one_send = OneSend(lease, limiter, campaign, cfg, WhatsAppClient(cfg, "token"), {})
        with ThreadPoolExecutor(1) as worker:
            result = worker.submit(one_send, rec)
            assert waiting.wait(30)
            assert Recipient.get(rec.PK, rec.SK, consistent_read=True).status == "pending"
            go.set()
            assert result.result(timeout=30).kind == Kind.SENT
    assert Recipient.get(rec.PK, rec.SK, consistent_read=True).status == "sent"
    assert [s["callback"] for s in fake.sends()] == ["c1:0:3"]


def test_campaigns_on_one_number_share_its_throughput_and_another_number_keeps_its_own(make_stack):
    """Two campaigns at rate 20 on a number limited to 20 mps (a fake refusing above it) split it
    10 and 10 while both send, nearly without a refusal; a campaign on another number keeps its 20."""
    stack = make_stack(fake_latency_ms=10)
    stack.fake.configure(rate_cap_mps=20)
    numbers.configure("5550001", 20)
    shared = [new_campaign(300, rate=20, phone_number_id="5550001") for _ in range(2)]
    alone = new_campaign(300, rate=20, phone_number_id="5550002")
    for campaign in (*shared, alone):
        service.send(campaign.id, settings())

    def split_in_two():
        view = numbers.number_view("5550001")
        return [s["share_mps"] for s in view["sending"]] == [10.0, 10.0] and view

    view = wait_until(split_in_two, 60, "both campaigns sending from the number, 10 mps each")
    assert view["in_use_mps"] == 20.0 and {s["campaign_id"] for s in view["sending"]} == {c.id for c in shared}
    wait_until(lambda: [s["share_mps"] for s in numbers.number_view("5550002")["sending"]] == [20.0], 60,
               "the campaign on the other number sending at its own 20 mps")
    for campaign in (*shared, alone):
        wait_until(completed(campaign), 120, "every campaign to complete")
        result = audit(campaign, stack.fake)
        assert result["lost"] == 0 and result["duplicates"] == {} and result["statuses"] == {"sent": 300}
    refused = [r for r in stack.fake.rejected() if r["code"] == 130429 and r["phone_number_id"] == "5550001"]
    assert len(refused) <= 0.02 * 600, len(refused)
    assert numbers.number_view("5550001")["sending"] == []  # each batch gave its share back


def test_a_campaign_at_its_portfolios_messaging_limit_waits_parked_and_goes_on_as_the_window_rolls(make_stack):
    """A 50-recipient campaign on a number whose portfolio may reach 30 users a (shortened) day:
    exactly 30 reach the provider, the campaign says it waits and until when, no batch runs while it
    waits, and it goes on by itself once the window frees room."""
    stack = make_stack(fake_latency_ms=5, messaging_window_seconds=24.0)
    numbers.configure("5550003", 80, messaging_limit=30)
    campaign = new_campaign(50, rate=40, phone_number_id="5550003")
    service.send(campaign.id, settings())
    answer = wait_until(lambda: (a := status(campaign))["waiting_reason"] and a, 60, "the campaign to wait")
    assert answer["status"] == "sending" and answer["waiting_reason"] == "messaging_limit"
    assert len(stack.fake.sends()) == 30 and answer["counts"]["failed"] == 0
    assert answer["waiting_until"] is not None
    wait_until(lambda: not live_senders(stack), 30, "no batch running while it waits")
    assert len(stack.fake.sends()) == 30
    view = numbers.number_view("5550003")
    assert (view["reached_24h"], view["left"]) == (30, 0)
    wait_until(completed(campaign), 90, "the campaign to go on once room frees, and complete")
    result = audit(campaign, stack.fake)
    assert result["statuses"] == {"sent": 50} and result["duplicates"] == {}
    assert status(campaign)["waiting_reason"] is None


def test_pause_resume_and_cancel_work_while_a_campaign_waits_for_its_messaging_limit(make_stack):
    stack = make_stack(fake_latency_ms=5)
    numbers.configure("5550004", 80, messaging_limit=10)
    campaign = new_campaign(20, rate=40, phone_number_id="5550004")
    service.send(campaign.id, settings())
    wait_until(lambda: status(campaign)["waiting_reason"] == "messaging_limit", 60, "the campaign to wait")
    service.pause(campaign.id)
    assert (status(campaign)["status"], status(campaign)["waiting_reason"]) == ("paused", None)
    service.resume(campaign.id, settings())  # its shards start again, find no room, and wait again
    wait_until(lambda: (s := status(campaign))["status"] == "sending" and s["waiting_reason"] == "messaging_limit",
               60, "the resumed campaign to wait again")
    service.cancel(campaign.id)
    assert status(campaign)["status"] == "cancelled"
    wait_until(lambda: not live_senders(stack), 30, "no batch running")
    assert len(stack.fake.sends()) == 10  # never past the limit through all of it


def test_a_number_of_another_account_sends_with_its_own_token(make_stack):
    """The number's secret (under the stack's prefix) holds its own token: its campaigns send with it."""
    stack = make_stack(fake_latency_ms=5)
    name = f"{stack.config.table_name}/numbers/5550005"
    create_secret(stack.moto.url, {"access_token": "other-account-token"}, name=name)
    numbers.configure("5550005", 80, secret=name)
    stack.fake.configure(token="other-account-token")  # the provider takes that account's token only now
    campaign = new_campaign(20, phone_number_id="5550005")
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete with the number's token")
    assert audit(campaign, stack.fake)["statuses"] == {"sent": 20}
    with pytest.raises(service.Unprocessable) as refused:  # a secret the functions may not read
        numbers.configure("5550005", 80, secret="someone-else/their-secret")
    assert refused.value.field == "secret"


def test_a_marketing_messages_campaign_sends_through_that_endpoint_and_completes(make_stack):
    """`api: marketing_messages`: every send goes to /{phone_number_id}/marketing_messages (the fake records
    the endpoint), its errors are classified and its statuses applied as for /messages."""
    stack = make_stack(fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)  # the fake's status webhooks come back through it
    stack.fake.configure(reject_numbers={"919870000003": 131026})
    spec = service.CampaignSpec(name="marketing", phone_number_id="1234567890", template=TEMPLATE,
                                in_doubt_policy="skip", api="marketing_messages")
    campaign = service.create_campaign(spec, settings())
    service.add_recipients(campaign.id, [service.RecipientRow(phone=f"91987{n:07d}", variables=[f"name{n}"])
                                         for n in range(20)])
    service.send(campaign.id, settings())
    wait_until(completed(campaign), 60, "the campaign to complete")
    assert audit(campaign, stack.fake)["statuses"] == {"sent": 19, "failed": 1}
    assert {s["endpoint"] for s in stack.fake.sends()} == {"marketing_messages"}
    assert [(r["code"], r["endpoint"]) for r in stack.fake.rejected()] == [(131026, "marketing_messages")]
    wait_until(lambda: status(campaign)["counts"]["read"] == 19, 30, "the read statuses of its sends")
    assert status(campaign)["api"] == "marketing_messages"


def _post_signed(stack, payload: dict) -> None:
    body = json.dumps(payload).encode()
    answer = requests.post(f"{stack.gateway.url}/webhook", data=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature_header(body, stack.secret["app_secret"])})
    assert answer.status_code == 200, answer.text


def template_event(event: str, title: str | None = None) -> dict:
    """A `message_template_status_update` webhook as Meta posts it (docs/api.md, Webhook)."""
    value = {"event": event, "message_template_id": 1234, "message_template_name": TEMPLATE["name"],
             "message_template_language": TEMPLATE["language"], "reason": "LOW_QUALITY"}
    if title:
        value["other_info"] = {"title": title, "description": "the template's quality improved"}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "waba-1", "time": 1796000000,
                       "changes": [{"field": "message_template_status_update", "value": value}]}]}


def test_a_template_meta_pauses_pauses_its_campaigns_and_its_unpause_resumes_only_those(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    by_meta, by_person = new_campaign(300, rate=20), new_campaign(300, rate=20)
    for campaign in (by_meta, by_person):
        service.send(campaign.id, settings())
    wait_until(lambda: len(stack.fake.sends()) >= 10, 30, "some sends")
    service.pause(by_person.id)
    _post_signed(stack, template_event("PAUSED"))
    answer = wait_until(lambda: (s := status(by_meta))["status"] == "paused" and s, 30, "the provider's pause")
    assert answer["paused_by"] == "provider" and "PAUSED by Meta" in answer["paused_reason"]
    wait_until(lambda: not live_senders(stack), 30, "its batches to stop")
    sent_while_paused = len(stack.fake.sends())
    _post_signed(stack, template_event("APPROVED", title="UNPAUSE"))
    wait_until(completed(by_meta), 60, "the campaign Meta paused to go on by itself and complete")
    assert status(by_person)["status"] == "paused" and status(by_person)["paused_by"] == "person"
    result = audit(by_meta, stack.fake)
    assert result["statuses"] == {"sent": 300} and result["duplicates"] == {}
    # Nothing of the person's campaign went out after its batches stopped.
    assert sum(1 for s in stack.fake.sends() if s["callback"].startswith(by_person.id)) <= sent_while_paused


def account_event(account_id: str, expiration: str, restriction: str = "RESTRICTED_BIZ_INITIATED_MESSAGING") -> dict:
    """An `account_update` webhook as Meta posts it (docs/api.md, Webhook)."""
    value = {"event": "ACCOUNT_RESTRICTION",
             "restriction_info": [{"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": expiration},
                                  {"restriction_type": restriction, "expiration": expiration}]}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": account_id, "time": 1796000000, "changes": [{"field": "account_update", "value": value}]}]}


def test_an_account_restriction_pauses_that_accounts_campaigns_until_its_expiration_then_they_go_on(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    numbers.configure("5550001", 80, business_account_id="111")
    numbers.configure("5550002", 80, business_account_id="222")
    restricted, other = new_campaign(200, rate=20, phone_number_id="5550001"), new_campaign(200, rate=20,
                                                                                              phone_number_id="5550002")
    for campaign in (restricted, other):
        service.send(campaign.id, settings())
    wait_until(lambda: len(stack.fake.sends()) >= 10, 30, "some sends")
    expiration = datetime.now(UTC) + timedelta(seconds=6)
    _post_signed(stack, account_event("111", expiration.strftime("%Y-%m-%dT%H:%M:%S+0000")))
    answer = wait_until(lambda: (s := status(restricted))["status"] == "paused" and s, 30, "the provider's pause")
    assert answer["paused_by"] == "provider" and "restricted by Meta" in answer["paused_reason"]
    assert datetime.fromisoformat(answer["paused_until"]) == expiration.replace(microsecond=0)
    assert status(other)["status"] == "sending"  # another account's number goes on
    wait_until(lambda: not Shard.get(*Shard.key(restricted.id, 0), consistent_read=True).lease_owner, 30,
               "the restricted campaign's batch to stop")
    stopped_at = time.time()
    # A restriction of replies only changes nothing.
    _post_signed(stack, account_event("222", expiration.strftime("%Y-%m-%dT%H:%M:%S+0000"),
                                      restriction="RESTRICTED_CUSTOMER_INITIATED_MESSAGING"))
    wait_until(completed(restricted), 90, "the restricted campaign to go on by itself at the expiration")
    sends = [s["at"] for s in stack.fake.sends() if s["callback"].startswith(restricted.id)]
    assert not [at for at in sends if stopped_at < at < expiration.replace(microsecond=0).timestamp()]
    assert audit(restricted, stack.fake)["statuses"] == {"sent": 200}
    wait_until(completed(other), 60, "the other campaign to complete")


def test_a_scheduled_campaign_of_a_paused_template_is_paused_and_scheduled_again_by_its_unpause(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    campaign = new_campaign(5, rate=20)
    send_at = time.time() + 3600
    service.schedule(campaign.id, send_at)
    _post_signed(stack, template_event("PAUSED"))
    paused = Campaign.get(*Campaign.key(campaign.id), consistent_read=True)
    assert (paused.status, paused.paused_by, paused.due_kind) == ("paused", "provider", None)
    _post_signed(stack, template_event("APPROVED", title="UNPAUSE"))
    again = Campaign.get(*Campaign.key(campaign.id), consistent_read=True)
    assert (again.status, again.paused_by, again.due_at) == ("scheduled", None, send_at)
    assert stack.fake.sends() == []


def test_outside_its_send_window_a_campaign_sends_nothing_and_says_until_when_it_waits(make_stack):
    stack = make_stack(fake_latency_ms=5)
    now = datetime.now(UTC)
    opens, closes = now + timedelta(hours=2), now + timedelta(hours=3)
    spec = service.CampaignSpec(name="window", phone_number_id="1234567890", template=TEMPLATE, rate=20,
                                send_window={"start": opens.strftime("%H:%M"), "end": closes.strftime("%H:%M"),
                                             "timezone": "UTC"})
    campaign = service.create_campaign(spec, settings())
    service.add_recipients(campaign.id, [service.RecipientRow(phone=f"91987{n:07d}") for n in range(10)])
    service.send(campaign.id, settings())
    answer = wait_until(lambda: (s := status(campaign))["waiting_reason"] and s, 30, "the campaign to wait")
    assert (answer["status"], answer["waiting_reason"]) == ("sending", "send_window")
    opening = datetime.fromisoformat(answer["waiting_until"])
    assert opening.strftime("%H:%M") == opens.strftime("%H:%M") and opening > now
    wait_until(lambda: not live_senders(stack), 30, "no batch running while it waits")
    assert stack.fake.sends() == []
    shard = Shard.get(*Shard.key(campaign.id, 0), consistent_read=True)
    assert shard.due_at == opening.timestamp()  # recovery starts it again at the opening


def test_after_its_expiry_a_campaign_sends_nothing_and_the_rest_ends_expired(make_stack):
    stack = make_stack(fake_latency_ms=5)
    expires_at = time.time() + 8
    spec = service.CampaignSpec(name="offer", phone_number_id="1234567890", template=TEMPLATE, rate=2,
                                expires_at=expires_at)
    campaign = service.create_campaign(spec, settings())
    service.add_recipients(campaign.id, [service.RecipientRow(phone=f"91987{n:07d}") for n in range(60)])
    service.send(campaign.id, settings())
    answer = wait_until(lambda: (s := status(campaign))["status"] == "completed" and s, 60, "the campaign to complete")
    sends = [s for s in stack.fake.sends() if s["callback"].startswith(campaign.id)]
    assert sends and max(s["at"] for s in sends) < expires_at  # nothing reached the provider after it
    counts = answer["counts"]
    assert counts["sent"] == len(sends) and counts["expired"] == 60 - len(sends) > 0
    assert counts["pending"] == counts["sending"] == 0
    by_status = Counter(r.status for r in recipients(campaign))
    assert by_status == {"sent": len(sends), "expired": 60 - len(sends)}
    assert all(r.expired_at >= expires_at - TRANSIT_SPREAD_SECONDS for r in recipients(campaign)
               if r.status == "expired")
    assert datetime.fromisoformat(answer["expires_at"]).timestamp() == pytest.approx(expires_at, abs=0.001)
