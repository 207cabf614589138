"""One time-bounded batch of one shard: claim, send, checkpoint, heartbeat, hand off.

The batch takes the lease it was invoked for, settles what a dead predecessor left in flight,
then walks the shard from its cursor: each recipient is claimed by a conditional write, sent,
and checkpointed right after the response, with a bounded number of sends in flight inside
the shard's rate. It stops claiming when its remaining time drops under the margin, lets the
sends in flight finish, and either finishes the shard, hands the lease to the next batch it
invokes itself, or releases the shard with the time recovery should look at it again
(campaigns/batch_end.py).

Threads: the main loop owns the batch's state (campaigns/progress.py) and is the only one to
change it. Worker threads claim, send and checkpoint one recipient each (campaigns/sending.py); a
heartbeat thread renews the lease and reads the campaign's status (campaigns/heartbeat.py). Both
report back through one queue, which the main loop drains.
"""

from __future__ import annotations

import functools
import gc
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import invoker, lifecycle, windows
from . import lease as leases
from .achieved import AchievedRate
from .batch_end import BatchEnd
from .budget import Budget
from .config import Settings
from .feed import ShardFeed, in_doubt_rule
from .heartbeat import Beat, Heartbeat
from .models import Campaign, Recipient
from .observability import Metric, count, count_failed, latency_ms, logger
from .progress import ShardProgress, Stop
from .ratelimit import RateLimiter, SendWindow
from .reach import ReachLimit
from .sending import Kind, OneSend, Result, whatsapp_client
from .states import CampaignStatus
from .states import RecipientStatus as R
from .whatsapp import WhatsAppClient
from .windows import SendHours


class ShardBatch:
    def __init__(
        self,
        event: dict,
        remaining_seconds: Callable[[], float],
        settings: Settings,
        client: WhatsAppClient | None = None,
    ):
        parsed = invoker.SenderEvent.parse(event)
        if parsed is None:
            raise ValueError(f"not a sender event: {sorted(event)}")
        self.campaign_id, self.shard_no, self.token, self.hop = (parsed.campaign_id, parsed.shard, parsed.token,
                                                                 parsed.hop)
        self.remaining = remaining_seconds
        self.settings = settings
        self._client = client
        self.one_send: OneSend | None = None  # made once the lease, the limiter and the campaign are known
        self.lease: leases.Lease | None = None
        self.campaign: Campaign | None = None
        self.progress = ShardProgress(cursor=0)  # from the shard's cursor once the lease is taken
        self.limiter: RateLimiter | None = None
        self.budget: Budget | None = None  # the shard's part of its number's throughput
        self.reach: ReachLimit | None = None  # its portfolio's messaging limit, if its number has one
        self.hours: SendHours | None = None  # the campaign's send window, if it has one
        self.achieved: AchievedRate | None = None  # made with the limiter, when sending starts
        self.window = SendWindow(settings.max_in_flight)
        self.results: queue.Queue[Result | Beat] = queue.Queue()
        self.in_flight = 0
        self.feed: ShardFeed | None = None  # what to send next, from the shard's cursor
        self.committed_imports: set[str] = set()
        self.stop: Stop | None = None
        self.heartbeat: Heartbeat | None = None  # started with the sending
        self.heartbeat_error: Exception | None = None

    # -- the batch ---------------------------------------------------------------------------

    def run(self) -> dict:
        taken = leases.acquire(self.campaign_id, self.shard_no, self.token, self.settings)
        if taken is None:
            logger.info("lease not ours (duplicate or superseded event)", extra=self._where())
            return self._report("not_ours")
        self.lease, shard = taken
        count(Metric.BATCHES_STARTED)
        self.campaign = Campaign.get(*Campaign.key(self.campaign_id), consistent_read=True)
        self.committed_imports = set(self.campaign.imports or ())
        if self.campaign.status != CampaignStatus.SENDING:
            self.stop = Stop.HALTED
        elif windows.expired(self.campaign.expires_at, time.time()):
            self.stop = Stop.EXPIRED
        else:
            per_shard = float(self.campaign.rate) / int(self.campaign.shard_count)
            # The shard's share of its number, which other campaigns may be sending from too.
            self.budget = Budget(self.campaign.phone_number_id, f"{self.campaign_id}:{self.shard_no}", per_shard,
                                 self.lease.owner, self.settings)
            self.limiter = RateLimiter(self.budget.renew())
            self.reach = ReachLimit.of_number(self.budget.number, self.settings)
            self.hours = SendHours.of(self.campaign.send_window)
            if self.campaign.waiting_reason:
                lifecycle.stop_waiting(self.campaign_id)  # sending again (waits again if a limit says so)
            self.achieved = AchievedRate()
            self.progress = ShardProgress(cursor=int(shard.cursor), deadline=self.campaign.expires_at)
            self.feed = ShardFeed(self.lease, self.progress, self.committed_imports,
                                  in_doubt_rule(self.campaign, self.settings), self._where())
            try:
                self._send_loop()
            finally:
                self.feed.close()
        BatchEnd(self.lease, self.progress, self._shard_actions, self.committed_imports, self.hop,
                 self.settings)(self.stop)
        if self.budget is not None:
            self.budget.leave()  # its share goes back to the number's other shards at once
        count(Metric.BATCHES_FINISHED)
        return self._report(self.stop.value)

    def _send_loop(self) -> None:
        # The client is made before the workers start: one read of the secret, not one per worker.
        secret = self.budget.number.secret if self.budget.number else None  # a number of another account
        client = self._client or whatsapp_client(self.settings, self.settings.max_in_flight, secret)
        self.one_send = OneSend(self.lease, self.limiter, self.campaign, self.settings, client, self._where(),
                                self.reach)
        freeze_the_heap_once()
        workers = ThreadPoolExecutor(max_workers=self.settings.max_in_flight, thread_name_prefix="send")
        self.heartbeat = Heartbeat(self.lease, self.campaign_id, self.settings, self.results, self.budget)
        try:
            while self.stop is None:
                if self.heartbeat.due():
                    self._start_heartbeat()
                if self.remaining() < self.settings.stop_margin_seconds:
                    self.stop = Stop.TIME
                    break
                if self._may_not_send_now():
                    break
                rec = self.feed.next_ready()
                if rec is not None:
                    self._dispatch(workers, rec)
                elif self.in_flight:
                    self._collect(timeout=self.heartbeat.until_due())
                else:
                    self._wait_or_stop()
        finally:
            # Drain: every claim of this batch gets its checkpoint, and the last heartbeat lands
            # before the lease is let go (its counters flushed, a lost lease or halt seen).
            while self.in_flight or self.heartbeat.pending:
                self._collect(timeout=None)
            workers.shutdown(wait=True)
            self.heartbeat.close()
        if self.heartbeat_error is not None:
            raise self.heartbeat_error  # the batch fails, as if the main loop had made the call

    def _dispatch(self, workers: ThreadPoolExecutor, rec: Recipient) -> None:
        while self.in_flight >= self.window.size(self.limiter.pace):
            self._collect(timeout=None)
        if self.stop is not None:
            self.progress.open(rec)  # read, not sent: open for the next batch
            return
        if not self.lease.usable():
            self._heartbeat_now()  # a late heartbeat, not necessarily a lost lease
        if not self.lease.usable():
            self.progress.open(rec)
            self.stop = self.stop or Stop.LEASE_LOST
            return
        self.in_flight += 1
        workers.submit(self.one_send.reporting_to, self.results, rec)

    def _wait_or_stop(self) -> None:
        """Nothing ready and nothing in flight: finish, wait for a retry, or leave it to recovery."""
        wake = self.progress.earliest_wait()
        if wake is None:
            self.stop = Stop.WAIT if self.progress.parked_until else Stop.DONE
            return
        now = time.time()
        if wake - now > self.remaining() - self.settings.stop_margin_seconds:
            self.stop = Stop.WAIT
            return
        self._collect(timeout=max(0.0, min(wake - now, self.heartbeat.until_due())))

    # -- results (main thread) ---------------------------------------------------------------

    def _collect(self, timeout: float | None) -> None:
        try:
            result = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        if isinstance(result, Beat):
            self._apply_beat(result)
            return
        self.in_flight -= 1
        self.window.observe(result.work_seconds)
        self._apply(result)

    def _apply(self, result: Result) -> None:
        rec, kind = result.rec, result.kind
        self.progress.record(kind, rec)
        if kind == Kind.SENT:
            count(Metric.MESSAGES_SENT)
            latency_ms(Metric.SEND_LATENCY, result.latency_ms)
            self.limiter.succeeded()
            self.achieved.accepted()
        elif kind == Kind.FAILED:
            count_failed(result.error_class)
        elif kind == Kind.IN_DOUBT:
            count(Metric.MESSAGES_IN_DOUBT)
            self.feed.park_in_doubt(rec, since=time.time())
        elif kind in (Kind.RETRY, Kind.THROTTLED):
            count(Metric.MESSAGES_THROTTLED if kind == Kind.THROTTLED else Metric.MESSAGES_RETRIED)
            if kind == Kind.THROTTLED:
                self.limiter.throttled()
            rec.status = R.PENDING.value
            self.progress.wait(rec, until=result.retry_at)
        elif kind == Kind.FATAL:
            self._halt_campaign(result.reason, result.code)
        elif kind == Kind.LIMITED:
            self._wait_for_room(rec)
        elif kind == Kind.EXPIRED:
            self.progress.open(rec)  # not claimed: the batch's end expires it with the rest
            self.stop = self.stop or Stop.EXPIRED
        elif kind == Kind.LOST and not self.lease.usable():
            self.stop = self.stop or Stop.LEASE_LOST

    def _halt_campaign(self, reason: str, code: int | None) -> None:
        """A campaign-fatal error: pause the campaign with the reason, stop claiming."""
        if self.stop != Stop.HALTED:
            self.stop = Stop.HALTED
            lifecycle.halt_for_error(self.campaign_id, int(self.campaign.shard_count), reason, code,
                                     self._where(), self.campaign.template)

    def _wait_for_room(self, rec: Recipient) -> None:
        """The messaging limit is reached: the recipient stays open, and the shard waits for room."""
        self.progress.open(rec)
        self._park("messaging_limit", self.reach.waiting_until or time.time() + self.settings.proof_recheck_seconds)

    def _may_not_send_now(self) -> bool:
        """The campaign expired (the batch stops), or it is outside its send window (the shard waits
        for the opening, or for the expiry if that comes first)."""
        now = time.time()
        if windows.expired(self.campaign.expires_at, now):
            self.stop = self.stop or Stop.EXPIRED
            return True
        if self.hours is None or self.hours.is_open(now):
            return False
        self._park("send_window", self.hours.next_opening(now))
        return True

    def _park(self, reason: str, until: float) -> None:
        """Stop claiming; the shard is let go until `until` (no Lambda runs meanwhile: recovery starts
        it again then), and the campaign's status says why."""
        self.progress.park_shard(until)
        if self.stop is None:
            self.stop = Stop.WAIT
            lifecycle.wait_for(self.campaign_id, reason, until)

    # -- heartbeat (its own thread: campaigns/heartbeat.py) -------------------------------------

    def _heartbeat_now(self) -> None:
        """Wait for a heartbeat to land, started now unless one is on its way."""
        if not self.heartbeat.pending:
            self._start_heartbeat()
        while self.heartbeat.pending:
            self._collect(timeout=None)

    def _start_heartbeat(self) -> None:
        # The progress it flushes is taken here, on the main loop, which owns it; should the
        # lease be lost, so are these deltas, and the next holder recounts (Shard.dirty_since).
        actions = self._shard_actions()
        self.progress.written()
        self.heartbeat.start(actions)

    def _apply_beat(self, beat: Beat) -> None:
        self.heartbeat.landed()
        if beat.error is not None:
            # Stop claiming; the error is raised once every send in flight is checkpointed.
            self.heartbeat_error = beat.error
            self.stop = Stop.LEASE_LOST
        elif beat.lease_lost:
            self.stop = Stop.LEASE_LOST
        elif beat.halted and self.stop != Stop.LEASE_LOST:
            self.stop = Stop.HALTED  # also over time-up or done seen meanwhile: no hand-off, no retry
        if beat.share is not None:
            self.limiter.set_limit(beat.share)

    def _shard_actions(self) -> list:
        # The figures a status shows ride this write: what was sent, and the pace allowed.
        live = self.achieved.shard_actions(self.limiter.pace) if self.limiter else []
        return self.progress.shard_actions() + live

    def _where(self) -> dict:
        return {"campaign_id": self.campaign_id, "shard": self.shard_no, "hop": self.hop}

    def _report(self, outcome: str) -> dict:
        return {**self._where(), "outcome": outcome, **dict(self.progress.outcomes)}


@functools.cache  # once per process: a warm Lambda's later batches find the same heap
def freeze_the_heap_once() -> None:
    """Takes what the process has built so far (modules, botocore's service models, the clients)
    out of the cyclic garbage collector's reach.

    A full collection walks every object the collector tracks while every thread waits, and this
    process holds over a hundred thousand that live as long as it does: 110-140 ms each, every 30-40 s
    at 60 mps. Sends whose slot fell in the pause then left together, and one second later the
    provider's sliding second still held them while ours did not: a 130429. Frozen, a collection
    walks only what the batch itself keeps (its page of recipients, the sends in flight).
    Collected first, so that no garbage is frozen with them.
    """
    gc.collect()
    gc.freeze()


def run_batch(event: dict, remaining_seconds: Callable[[], float], settings: Settings) -> dict:
    report = ShardBatch(event, remaining_seconds, settings).run()
    logger.info("batch finished", extra=report)
    return report

