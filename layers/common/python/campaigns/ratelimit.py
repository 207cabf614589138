"""Pacing of sends: a token bucket per shard that slows down on 130429 and recovers slowly.

A campaign's rate is split evenly over its shards, so together they stay under it. A
throughput error halves the shard's pace at once (multiplicative decrease, at most once
per second) and success earns it back step by step (additive increase), the way TCP
shares a link: under a throttling provider the sender settles just below what it allows.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

# Shards pace this far under the campaign's rate: a POST leaves a little after its slot (thread
# wake-up, the network), and a provider that counts a sliding second would refuse the send that
# such jitter pushes over an exact limit with 130429, which then halves the pace.
PACE_UNDER_LIMIT = 0.985


class RateLimiter:
    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_rate: float = 0.5,
    ):
        self.target = float(rate)
        self.rate = float(rate)
        self.min_rate = min_rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = clock()
        self._last_decrease = float("-inf")

    def reserve(self) -> float:
        """Take the next send slot; returns how long to wait before using it."""
        with self._lock:
            now = self._clock()
            slot = max(self._next_free, now)
            self._next_free = slot + 1.0 / self.rate
            return slot - now

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    def throttled(self) -> None:
        """The provider said 130429: halve the pace, once per second at most."""
        with self._lock:
            now = self._clock()
            if now - self._last_decrease >= 1.0:
                self.rate = max(self.min_rate, self.rate / 2)
                self._last_decrease = now
                # Push the next slot out so that the burst already granted is not sent.
                self._next_free = max(self._next_free, now + 1.0 / self.rate)

    def succeeded(self) -> None:
        """Each accepted send earns back a little pace, up to the target."""
        with self._lock:
            if self.rate < self.target:
                self.rate = min(self.target, self.rate + max(0.05, self.target / 200))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return (rng or random).uniform(0, ceiling)
