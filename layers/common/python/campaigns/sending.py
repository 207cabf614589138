"""One send of a batch, on a worker thread: rate slot, claim, departure, own-clock check, POST, checkpoint.

Per message the sender writes twice (ledger.claim before the POST, one checkpoint after the
response) and decides, from the response alone, what the recipient comes to: sent, in doubt, failed
(with the Graph error's class from graph_errors), or back to pending to be retried (with capped
exponential backoff, or at least 6 s for Meta's pair rate). The batch's main loop applies the Result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from . import lease as leases
from . import ledger, suppressions, windows
from .config import Settings, whatsapp_secret
from .graph_errors import ErrorClass, classify
from .models import Campaign, Recipient
from .observability import logger
from .ratelimit import RateLimiter, backoff_delay
from .reach import ReachLimit
from .whatsapp import Outcome, SendResult, WhatsAppClient, template_payload


class Kind(StrEnum):
    """What one send came to."""

    SENT = "sent"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    RETRY = "retry"  # back to pending until retry_at (its attempt counted, unless nothing left)
    THROTTLED = "throttled"  # 130429: back to pending, and the shard slows down
    FATAL = "fatal"  # the campaign cannot go on: it pauses
    LOST = "lost"  # the claim is not (or no longer) this batch's: nothing to record
    LIMITED = "limited"  # the portfolio's messaging limit is reached: not claimed, still pending
    EXPIRED = "expired"  # the campaign's expires_at passed while it waited for its slot: not claimed


# The kinds a recipient ends with (its shard's counters and the batch's progress).
SETTLED = (Kind.SENT, Kind.FAILED, Kind.IN_DOUBT)


@dataclass
class Result:
    """What one send came to, reported by a worker thread to the batch's main loop."""

    rec: Recipient
    kind: Kind
    retry_at: float = 0.0
    latency_ms: float = 0.0
    error_class: ErrorClass | None = None
    reason: str = ""
    code: int | None = None  # the Graph error's code, if it was one
    paced_seconds: float = 0.0  # waiting for its rate slot
    work_seconds: float = 0.0  # holding its window slot, not counting the wait for its rate slot


_clients: dict[str, WhatsAppClient] = {}


MAX_CLIENTS = 8  # tokens a warm process keeps a pooled client for (numbers of other accounts)


def whatsapp_client(settings: Settings, pool_size: int, secret: str | None = None) -> WhatsAppClient:
    """One pooled client per process and token (the stack's, or the number's own `secret`): warm
    invocations reuse its connections; a rotated token gets a new one."""
    token = whatsapp_secret(settings, secret)["access_token"]
    if token not in _clients:
        if len(_clients) >= MAX_CLIENTS:
            _clients.clear()
        _clients[token] = WhatsAppClient(settings, token, pool_size=pool_size)
    return _clients[token]


class OneSend:
    """Sends one recipient for the batch holding `lease`; called on the batch's worker threads."""

    def __init__(self, lease: leases.Lease, limiter: RateLimiter, campaign: Campaign, settings: Settings,
                 client: WhatsAppClient, where: dict, reach: ReachLimit | None = None):
        self.lease, self.limiter, self.campaign = lease, limiter, campaign
        self.settings, self.client, self.where = settings, client, where
        self.reach = reach  # the portfolio's messaging limit, if the number has one

    def __call__(self, rec: Recipient) -> Result:
        owner = self.lease.owner
        payload = template_payload(rec.phone, self.campaign.template, list(rec.variables), rec.callback_key)
        # The rate slot is waited for before the claim: a recipient is claimed only once its send
        # is about to leave, so a kill leaves in doubt the sends on the wire, not the ones queued
        # for a slot (invariant 3). The departure itself is counted after the claim, right before
        # the POST: the claim's latency then cannot bunch POSTs over the provider's limit.
        paced = self.limiter.wait_for_slot()
        if self._too_late():  # the campaign expired while the send waited for its slot
            return Result(rec, Kind.EXPIRED, reason="the campaign expired", paced_seconds=paced)
        if self.reach is not None and not self.reach.admit(rec.phone):
            return Result(rec, Kind.LIMITED, reason="messaging limit reached", paced_seconds=paced)
        try:
            claimed = ledger.claim(rec, owner, time.time())
        except Exception as error:  # the store did not answer (a timeout, an error after its retries)
            return self._claim_unanswered(rec, owner, error)
        if not claimed:
            return Result(rec, Kind.LOST, reason="claimed elsewhere", paced_seconds=paced)
        paced += self.limiter.leave()
        # Our own clock, right before the POST: a batch frozen past its lease must not send.
        if not self.lease.usable():
            ledger.unclaim(rec, owner, None, count_attempt=False)
            return Result(rec, Kind.LOST, reason="lease expired before the send", paced_seconds=paced)
        if self._too_late():
            ledger.unclaim(rec, owner, None, count_attempt=False)
            return Result(rec, Kind.EXPIRED, reason="the campaign expired", paced_seconds=paced)
        response = self.client.send_template(self.campaign.phone_number_id, payload, self.campaign.api)
        result = self._checkpoint(rec, owner, response)
        result.paced_seconds = paced
        return result

    def _too_late(self) -> bool:
        return windows.expired(self.campaign.expires_at, time.time())

    def reporting_to(self, results, rec: Recipient) -> None:
        """Send `rec` on this worker thread and put its Result on the batch's queue, how long it held
        its window slot with it (not counting the wait for its rate slot)."""
        started = time.monotonic()
        try:
            result = self(rec)
        except Exception as error:  # a store error: the claim stays and a takeover settles it
            logger.exception("send failed unexpectedly", extra={**self.where, "seq": rec.seq})
            result = Result(rec, Kind.LOST, reason=str(error))
        result.work_seconds = time.monotonic() - started - result.paced_seconds
        results.put(result)

    def _claim_unanswered(self, rec: Recipient, owner: str, error: Exception) -> Result:
        """Nothing was sent, whether or not the claim landed: give the recipient back and retry it.

        Left claimed, a takeover could only call it in doubt, and under the default policy a
        recipient never sent would never be. The undo is conditioned on our own claim: if the
        claim never landed it changes nothing, and the recipient is still pending.
        """
        logger.warning("a claim went unanswered; retried later",
                       extra={**self.where, "seq": rec.seq, "error": str(error)})
        retry_at = time.time() + backoff_delay(0, self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
        try:
            ledger.unclaim(rec, owner, retry_at, count_attempt=False)
        except Exception:  # the store is still not answering: the claim stays for a takeover to settle
            logger.exception("undoing an unanswered claim failed", extra={**self.where, "seq": rec.seq})
            return Result(rec, Kind.LOST, reason=f"claim unanswered: {error}")
        return Result(rec, Kind.RETRY, retry_at=retry_at, error_class=ErrorClass.RETRYABLE)

    def _checkpoint(self, rec: Recipient, owner: str, response: SendResult) -> Result:
        now = time.time()
        if response.outcome == Outcome.ACCEPTED:
            if ledger.mark_sent(rec, owner, response.wamid, now):
                return Result(rec, Kind.SENT, latency_ms=response.latency_ms)
            return self._failed_before_checkpoint(rec, owner, now)
        if response.outcome == Outcome.UNKNOWN:
            # The request may have reached Meta: resending could deliver twice.
            ok = ledger.mark_in_doubt(rec, owner, now)
            return Result(rec, Kind.IN_DOUBT if ok else Kind.LOST, reason=response.message)
        error_class = ErrorClass.RETRYABLE if response.outcome == Outcome.NOT_SENT else classify(
            response.code, response.http_status or 400
        )
        return self._checkpoint_error(rec, owner, response, error_class, now)

    def _checkpoint_error(
        self, rec: Recipient, owner: str, response: SendResult, error_class: ErrorClass, now: float
    ) -> Result:
        code, message = int(response.code), response.message
        if error_class == ErrorClass.FATAL:
            ledger.unclaim(rec, owner, None, count_attempt=False)
            return Result(rec, Kind.FATAL, error_class=error_class, reason=f"Graph error {code}: {message}",
                          code=code)
        if error_class == ErrorClass.THROTTLED:
            retry_at = now + backoff_delay(0, self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
            ledger.unclaim(rec, owner, retry_at, count_attempt=False)
            return Result(rec, Kind.THROTTLED, retry_at=retry_at, error_class=error_class)
        if error_class in (ErrorClass.RETRYABLE, ErrorClass.RETRY_RECIPIENT):
            attempt = int(rec.attempts or 0) + 1
            if attempt < self.settings.max_attempts:
                delay = backoff_delay(attempt, self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
                if error_class == ErrorClass.RETRY_RECIPIENT:
                    delay = max(delay, 6.0)  # Meta's pair rate: about one message per 6 s per user
                ledger.unclaim(rec, owner, now + delay, count_attempt=True)
                rec.attempts = attempt
                return Result(rec, Kind.RETRY, retry_at=now + delay, error_class=error_class)
        ok = ledger.mark_failed(rec, owner, code, message, now)
        if ok and error_class == ErrorClass.SUPPRESS:
            self._suppress(rec, code, now)
        return Result(rec, Kind.FAILED if ok else Kind.LOST, error_class=error_class, reason=f"{code}")

    def _suppress(self, rec: Recipient, code: int, now: float) -> None:
        """131050 (rare): the number goes on the suppression list and its pending recipients in every
        campaign are skipped. The recipient's failure is checkpointed already: a store error here is
        logged, not made the send's outcome (its status webhook's 131050 suppresses it again)."""
        try:
            suppressions.suppress(rec.phone, suppressions.graph_reason(code), suppressions.SOURCE_GRAPH, now)
        except Exception:
            logger.exception("suppressing a number failed", extra={**self.where, "seq": rec.seq})

    def _failed_before_checkpoint(self, rec: Recipient, owner: str, now: float) -> Result:
        """mark_sent refused: a `failed` webhook beat our checkpoint (else the claim was taken)."""
        rec.refresh(consistent_read=True)
        if rec.failed_at is None or rec.claimed_by != owner:
            return Result(rec, Kind.LOST, reason="claim settled by another batch")
        code = int(rec.error_code or 0)
        ok = ledger.mark_failed(rec, owner, code, rec.error_message or "failed status webhook", now)
        return Result(rec, Kind.FAILED if ok else Kind.LOST, error_class=classify(code))

