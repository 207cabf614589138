"""Status webhooks: posted from background threads, in order per message, retried a few times."""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from dataclasses import dataclass

import requests

from .wire import signature_header, status_webhook


@dataclass
class _WebhookJob:
    """The statuses still to post for one accepted send, posted one after the other."""

    url: str
    app_secret: str | None
    record: dict
    statuses: list[str]
    delay_s: float
    generation: int
    step: int = 0
    attempt: int = 0

    @property
    def remaining(self) -> int:
        return len(self.statuses) - self.step


class WebhookPoster:
    """Posts status webhooks from a few background threads, never from the send path.

    Jobs wait in a heap ordered by due time. A message's next status is scheduled only after its previous
    one was posted (or given up), so statuses of one message arrive in order even with several workers.
    """

    WORKERS = 4
    ATTEMPTS = 3
    TIMEOUT_S = 2.0
    RETRY_BASE_S = 0.05

    def __init__(self):
        self._ready = threading.Condition()
        self._heap: list[tuple[float, int, _WebhookJob]] = []
        self._tiebreak = itertools.count()
        self._generation = 0  # bumped by clear(): jobs of an older generation are dropped
        self._posting = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.posted = 0
        self.failed = 0

    def start(self) -> None:
        self._stopping = False
        self._threads = []
        for n in range(self.WORKERS):
            thread = threading.Thread(target=self._work, name=f"fakegraph-webhooks-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._heap.clear()
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.TIMEOUT_S + 1)

    def submit(
        self, url: str, app_secret: str | None, record: dict, statuses: list[str], delay_s: float
    ) -> None:
        with self._ready:
            job = _WebhookJob(url, app_secret, record, statuses, delay_s, self._generation)
            self._schedule(job, time.monotonic())

    def clear(self) -> None:
        with self._ready:
            self._generation += 1
            self._heap.clear()
            self.posted = self.failed = 0

    def pending(self) -> int:
        """Status posts not done yet, including the ones being posted right now."""
        with self._ready:
            return sum(job.remaining for _, _, job in self._heap) + self._posting

    def _schedule(self, job: _WebhookJob, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._tiebreak), job))
        self._ready.notify()

    def _work(self) -> None:
        session = requests.Session()  # one per thread: Session is not thread-safe, pooling still helps
        try:
            while (job := self._next_due()) is not None:
                self._finish(job, ok=self._post(session, job))
        finally:
            session.close()

    def _next_due(self) -> _WebhookJob | None:
        with self._ready:
            while not self._stopping:
                wait_s = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait_s is not None and wait_s <= 0:
                    self._posting += 1
                    return heapq.heappop(self._heap)[2]
                self._ready.wait(wait_s)
            return None

    def _post(self, session: requests.Session, job: _WebhookJob) -> bool:
        body = json.dumps(status_webhook(job.record, job.statuses[job.step]), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if job.app_secret:
            headers["X-Hub-Signature-256"] = signature_header(body, job.app_secret)
        try:
            with session.post(job.url, data=body, headers=headers, timeout=self.TIMEOUT_S) as response:
                return 200 <= response.status_code < 300
        except requests.RequestException:
            return False

    def _finish(self, job: _WebhookJob, ok: bool) -> None:
        with self._ready:
            self._posting -= 1
            if job.generation != self._generation or self._stopping:
                return
            if not ok and job.attempt + 1 < self.ATTEMPTS:
                job.attempt += 1
                self._schedule(job, time.monotonic() + self.RETRY_BASE_S * 2**job.attempt)
                return
            # Posted, or given up after the last attempt: either way the next status follows, as Meta's do.
            if ok:
                self.posted += 1
            else:
                self.failed += 1
            job.step += 1
            job.attempt = 0
            if job.remaining:
                self._schedule(job, time.monotonic() + job.delay_s)
