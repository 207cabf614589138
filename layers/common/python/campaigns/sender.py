"""One time-bounded batch of one shard: claim, send, checkpoint, heartbeat, hand off.

The batch takes the lease it was invoked for, settles what a dead predecessor left in flight,
then walks the shard from its cursor: each recipient is claimed by a conditional write, sent,
and checkpointed right after the response, with a bounded number of sends in flight inside
the shard's rate. It stops claiming when its remaining time drops under the margin, lets the
sends in flight finish, and either finishes the shard, hands the lease to the next batch it
invokes itself, or releases the shard with the time recovery should look at it again.

Threads: the main loop owns the batch's state and is the only one to change it. Worker threads
claim, send and checkpoint one recipient each (campaigns/sending.py); a heartbeat thread renews
the lease and reads the campaign's status (campaigns/heartbeat.py). Both report back through one
queue, which the main loop drains.
"""

from __future__ import annotations

import functools
import gc
import heapq
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from . import invoker, ledger, lifecycle
from . import lease as leases
from .achieved import AchievedRate
from .config import Settings
from .graph_errors import ErrorClass
from .heartbeat import Beat, Heartbeat
from .models import Campaign, Recipient, Shard, write_if
from .observability import NAMESPACE, Metric, count, latency_ms, logger
from .ratelimit import RateLimiter, SendWindow
from .sending import SETTLED, Kind, OneSend, Result, whatsapp_client
from .states import SETTLED_COUNTERS, CampaignStatus, InDoubtPolicy
from .states import RecipientStatus as R
from .whatsapp import WhatsAppClient


class Stop(StrEnum):
    DONE = "done"  # no recipient of the shard is open any more
    TIME = "time"  # the batch's time is up
    WAIT = "wait"  # what is left waits longer than this batch can
    HALTED = "halted"  # the campaign is no longer sending (paused, cancelled, fatal error)
    LEASE_LOST = "lease_lost"  # somebody else holds the shard now


class ReadAhead(Iterator):
    """Iterates `items` from a background thread, at most `buffer` items ahead of the caller.

    The shard's next page is read while the current one is being sent: a Query page takes the
    store a moment to answer, and reading it on the send loop would pause every send meanwhile.
    """

    _END = object()

    def __init__(self, items: Iterable, buffer: int):
        self._items: queue.Queue = queue.Queue(maxsize=buffer)
        self._closed = threading.Event()
        self._done = False
        threading.Thread(target=self._fill, args=(items,), name="read-ahead", daemon=True).start()

    def _fill(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._END)
        except Exception as error:  # handed to the caller, raised where it iterates
            self._put(error)

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._items.put(item, timeout=0.5)  # wakes now and then to see whether it was closed
                return True
            except queue.Full:
                continue
        return False

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._items.get()
        if item is self._END:
            self._done = True
            raise StopIteration
        if isinstance(item, Exception):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        """The caller stops early: the reader thread ends instead of reading on."""
        self._closed.set()
        self._done = True


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
        self.limiter: RateLimiter | None = None
        self.achieved: AchievedRate | None = None  # made with the limiter, when sending starts
        self.window = SendWindow(settings.max_in_flight)
        self.results: queue.Queue[Result | Beat] = queue.Queue()
        self.in_flight = 0
        self.waiting: list[tuple[float, int, Recipient]] = []  # (retry_at, seq, rec): a heap
        self.open_seqs: set[int] = set()
        self.scanned_to = 0  # every seq below this has been read by this batch's scan
        self.start_cursor = 0
        self.scan: Iterator[Recipient] | None = None
        self.deltas: Counter = Counter()  # counter changes not yet flushed to the shard item
        self.outcomes: Counter = Counter()
        self.parked_until: float | None = None  # in-doubt recipients awaiting the grace period
        self.halt_reason = ""
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
        else:
            per_shard = float(self.campaign.rate) / int(self.campaign.shard_count)
            self.limiter = RateLimiter(per_shard)
            self.achieved = AchievedRate()
            self.start_cursor = self.scanned_to = int(shard.cursor)
            reader = ReadAhead(ledger.scan(self.campaign_id, self.shard_no, int(shard.cursor)),
                               buffer=ledger.SCAN_PAGE)
            self.scan = reader
            try:
                self._send_loop()
            finally:
                reader.close()
        self._finish()
        count(Metric.BATCHES_FINISHED)
        return self._report(self.stop.value)

    def _send_loop(self) -> None:
        # The client is made before the workers start: one read of the secret, not one per worker.
        client = self._client or whatsapp_client(self.settings, pool_size=self.settings.max_in_flight)
        self.one_send = OneSend(self.lease, self.limiter, self.campaign, self.settings, client, self._where())
        freeze_the_heap_once()
        workers = ThreadPoolExecutor(max_workers=self.settings.max_in_flight, thread_name_prefix="send")
        self.heartbeat = Heartbeat(self.lease, self.campaign_id, self.settings, self.results)
        try:
            while self.stop is None:
                self._heartbeat_if_due()
                if self.remaining() < self.settings.stop_margin_seconds:
                    self.stop = Stop.TIME
                    break
                rec = self._next_ready()
                if rec is not None:
                    self._dispatch(workers, rec)
                elif self.in_flight:
                    self._collect(timeout=self._until_heartbeat())
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
            self._reopen(rec)
            return
        if not self.lease.usable():
            self._heartbeat_now()  # a late heartbeat, not necessarily a lost lease
        if not self.lease.usable():
            self._reopen(rec)
            self.stop = self.stop or Stop.LEASE_LOST
            return
        self.in_flight += 1
        workers.submit(self._send_one_reporting, rec)

    def _wait_or_stop(self) -> None:
        """Nothing ready and nothing in flight: finish, wait for a retry, or leave it to recovery."""
        if not self.waiting:
            self.stop = Stop.WAIT if self.parked_until else Stop.DONE
            return
        wake = self.waiting[0][0]
        now = time.time()
        if wake - now > self.remaining() - self.settings.stop_margin_seconds:
            self.stop = Stop.WAIT
            return
        self._collect(timeout=max(0.0, min(wake - now, self._until_heartbeat())))

    # -- finding work ------------------------------------------------------------------------

    def _next_ready(self) -> Recipient | None:
        if self.waiting and self.waiting[0][0] <= time.time():
            return heapq.heappop(self.waiting)[2]
        while self.scan is not None:
            rec = next(self.scan, None)
            if rec is None:
                self.scan = None
                return None
            self.scanned_to = rec.seq + 1
            ready = self._triage(rec)
            if ready:
                return rec
        return None

    def _triage(self, rec: Recipient) -> bool:
        """Sort a scanned recipient: ready to send now, waiting, or nothing to do."""
        now = time.time()
        if rec.import_id not in self.committed_imports:
            return False  # part of an import that never finished: it does not exist
        if rec.status == R.PENDING:
            self.open_seqs.add(rec.seq)
            if rec.not_before and rec.not_before > now:
                heapq.heappush(self.waiting, (rec.not_before, rec.seq, rec))
                return False
            return True
        if rec.status == R.SENDING and rec.claimed_by != self.lease.owner:
            self._settle_orphan(rec, now)
            return False
        if rec.status == R.IN_DOUBT and self.campaign.in_doubt_policy == InDoubtPolicy.RESEND:
            grace_end = (rec.in_doubt_at or now) + self.settings.in_doubt_grace_seconds
            if grace_end <= now and ledger.requeue_in_doubt(rec, now - self.settings.in_doubt_grace_seconds):
                self.deltas["in_doubt"] -= 1
                self.open_seqs.add(rec.seq)
                rec.status = R.PENDING.value
                return True
            if grace_end > now:
                self._park_in_doubt(rec, since=rec.in_doubt_at or now)
        return False

    def _park_in_doubt(self, rec: Recipient, since: float) -> None:
        """Policy resend: a recipient in doubt since `since` stays open until its grace period is over
        (a status webhook may prove it meanwhile); then this batch, or a later one, sends it again."""
        if self.campaign.in_doubt_policy != InDoubtPolicy.RESEND:
            return
        self.open_seqs.add(rec.seq)
        grace_end = since + self.settings.in_doubt_grace_seconds
        self.parked_until = min(self.parked_until or grace_end, grace_end)

    def _settle_orphan(self, rec: Recipient, now: float) -> None:
        settled = ledger.settle_orphan(rec, now)
        if settled is None:
            return
        self.deltas[settled.value] += 1
        if settled == R.IN_DOUBT:
            count(Metric.MESSAGES_IN_DOUBT)
            self._park_in_doubt(rec, since=now)
        logger.info("settled an orphaned claim", extra={**self._where(), "seq": rec.seq, "as": settled.value})

    # -- one send (worker threads) -------------------------------------------------------------

    def _send_one_reporting(self, rec: Recipient) -> None:
        started = time.monotonic()
        try:
            result = self.one_send(rec)
        except Exception as error:  # a store error: the claim stays and a takeover settles it
            logger.exception("send failed unexpectedly", extra={**self._where(), "seq": rec.seq})
            result = Result(rec, Kind.LOST, reason=str(error))
        result.work_seconds = time.monotonic() - started - result.paced_seconds
        self.results.put(result)

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
        self.outcomes[kind] += 1
        if kind in SETTLED:
            self.deltas[kind] += 1
            self.open_seqs.discard(rec.seq)
        if kind == Kind.SENT:
            count(Metric.MESSAGES_SENT)
            latency_ms(Metric.SEND_LATENCY, result.latency_ms)
            self.limiter.succeeded()
            self.achieved.accepted()
        elif kind == Kind.FAILED:
            self._count_failed(result.error_class)
        elif kind == Kind.IN_DOUBT:
            count(Metric.MESSAGES_IN_DOUBT)
            self._park_in_doubt(rec, since=time.time())
        elif kind in (Kind.RETRY, Kind.THROTTLED):
            count(Metric.MESSAGES_THROTTLED if kind == Kind.THROTTLED else Metric.MESSAGES_RETRIED)
            if kind == Kind.THROTTLED:
                self.limiter.throttled()
            rec.status = R.PENDING.value
            heapq.heappush(self.waiting, (result.retry_at, rec.seq, rec))
        elif kind == Kind.FATAL:
            self._halt_campaign(result.reason)
        elif kind == Kind.LOST and not self.lease.usable():
            self.stop = self.stop or Stop.LEASE_LOST

    def _count_failed(self, error_class: ErrorClass | None) -> None:
        with single_metric(name=Metric.MESSAGES_FAILED, unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as m:
            m.add_dimension(name="ErrorClass", value=str(error_class or "unknown"))

    def _reopen(self, rec: Recipient) -> None:
        """A recipient this batch read but will not send: it stays open for the next batch."""
        self.open_seqs.add(rec.seq)

    def _halt_campaign(self, reason: str) -> None:
        """A campaign-fatal error: pause the campaign with the reason, stop claiming."""
        if self.stop != Stop.HALTED:
            self.stop = Stop.HALTED
            self.halt_reason = reason
            paused = lifecycle.pause_for_error(self.campaign_id, reason)
            if paused:
                leases.request_halt(self.campaign_id, range(int(self.campaign.shard_count)))
                count(Metric.CAMPAIGNS_PAUSED_FATAL)
                logger.error("campaign paused by a fatal Graph error", extra={**self._where(), "reason": reason})

    # -- heartbeat (its own thread: campaigns/heartbeat.py) -------------------------------------

    def _until_heartbeat(self) -> float:
        return self.heartbeat.until_due()

    def _heartbeat_if_due(self) -> None:
        if self.heartbeat.due():
            self._start_heartbeat()

    def _heartbeat_now(self) -> None:
        """Wait for a heartbeat to land, started now unless one is on its way."""
        if not self.heartbeat.pending:
            self._start_heartbeat()
        while self.heartbeat.pending:
            self._collect(timeout=None)

    def _start_heartbeat(self) -> None:
        # The progress it flushes is taken here, on the main loop, which owns it; should the
        # lease be lost, so are these deltas, and the next holder recounts (Shard.dirty_since).
        actions = self._progress_actions()
        self.deltas.clear()
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

    def _cursor(self) -> int:
        return min(self.open_seqs, default=self.scanned_to) if self.open_seqs else self.scanned_to

    def _progress_actions(self) -> list:
        actions = [Shard.cursor.set(self._cursor())]
        if self.limiter:
            # The figures a status shows, riding this write: what was sent, and the pace allowed.
            actions += [Shard.achieved_rate.set(round(self.achieved.rate(), 2)),
                        Shard.pace.set(round(self.limiter.pace, 2)),
                        Shard.measured_at.set(time.time())]
        for name, delta in self.deltas.items():
            if delta:
                actions.append(getattr(Shard, name).add(delta))
        return actions

    # -- the end of a batch --------------------------------------------------------------------

    def _finish(self) -> None:
        stop = self.stop
        if stop == Stop.LEASE_LOST:
            return
        if self.lease.predecessor_died:
            # After the sends, not before them: a takeover resumes sending at once, and the
            # counters it shows meanwhile are only low by what the dead batch had not flushed.
            self._recount()
        if stop == Stop.HALTED:
            self._release(due_at=None)
            self._restart_if_resumed()
        elif stop == Stop.DONE and self._nothing_open():
            self._finish_shard()
        elif stop == Stop.TIME and self._made_progress():
            self._hand_off()
        else:
            # No progress this batch (or work still open after all): no self-continuation
            # loop; recovery looks at the shard again when its earliest wait is over.
            waits = [t for t in (self.parked_until, self.waiting[0][0] if self.waiting else None) if t]
            self._release(due_at=min(waits, default=time.time()))

    def _made_progress(self) -> bool:
        return any(self.outcomes[k] for k in SETTLED) or self._cursor() > self.start_cursor

    def _release(self, due_at: float | None) -> None:
        leases.release(self.lease, due_at, self._progress_actions())
        self.deltas.clear()

    def _hand_off(self) -> None:
        token = leases.new_token()
        if leases.hand_off(self.lease, token, self.settings, self._progress_actions()):
            self.deltas.clear()
            invoker.invoke_sender(self.settings, invoker.sender_event(self.campaign_id, self.shard_no, token,
                                                                       self.hop + 1))

    def _restart_if_resumed(self) -> None:
        """Resume may have raced our release: if the campaign is sending again, start a batch.

        Resume writes `sending` before it reserves shards; we release before we read the
        status. So either resume found our lease free, or we see `sending` here.
        """
        status = Campaign.get(*Campaign.key(self.campaign_id), consistent_read=True).status
        if status == CampaignStatus.SENDING:
            lifecycle.start_shard(self.campaign_id, self.shard_no, self.settings)

    def _nothing_open(self) -> bool:
        """Confirm with a fresh read that no recipient of the shard is pending or in flight."""
        for rec in ledger.scan(self.campaign_id, self.shard_no, self._cursor()):
            if rec.import_id in self.committed_imports and rec.status in (R.PENDING, R.SENDING):
                return False
        return True

    def _finish_shard(self) -> None:
        leases.release(self.lease, None, [Shard.finished_at.set(time.time()), *self._progress_actions()])
        self.deltas.clear()
        lifecycle.close_shard(self.campaign_id, self.shard_no)

    def _recount(self) -> None:
        """Make the shard's counters exact; retried if a webhook moved a recipient meanwhile."""
        webhook_moves = int(Shard.get(*Shard.key(self.campaign_id, self.shard_no), consistent_read=True).webhook_moves)
        for _ in range(5):
            counts = ledger.recount(self.campaign_id, self.shard_no, self.committed_imports)
            exact = write_if(
                Shard(*Shard.key(self.campaign_id, self.shard_no)),
                [getattr(Shard, name).set(counts.get(name, 0)) for name in SETTLED_COUNTERS]
                + [Shard.total.set(sum(counts.values()))],
                (Shard.lease_owner == self.lease.owner) & (Shard.webhook_moves == webhook_moves),
            )
            if exact:
                self.deltas.clear()
                return
            webhook_moves = int(Shard.get(*Shard.key(self.campaign_id, self.shard_no),
                                          consistent_read=True).webhook_moves)

    def _where(self) -> dict:
        return {"campaign_id": self.campaign_id, "shard": self.shard_no, "hop": self.hop}

    def _report(self, outcome: str) -> dict:
        return {**self._where(), "outcome": outcome, **{k: v for k, v in self.outcomes.items()}}


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

