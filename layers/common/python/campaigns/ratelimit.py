"""Pacing of sends: a token bucket per shard that slows down on 130429 and recovers slowly,
and the window of sends in flight that holds that pace.

A campaign's rate is split evenly over its shards, so together they stay under it. A
throughput error cuts the shard's pace at once (multiplicative decrease, at most once
per second) and success earns it back step by step (additive increase), the way TCP
shares a link: under a throttling provider the sender settles just below what it allows.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable

# Shards pace this far under the campaign's rate: a POST reaches the provider a little after its
# slot (thread wake-up, the network), and a provider that counts a sliding second refuses the send
# that such jitter pushes over an exact limit. At 80 mps this keeps 79 sends a second, one under
# the limit: 12 ms of jitter absorbed.
PACE_UNDER_LIMIT = 0.99

# How a 130429 cuts the pace, by the share of the trailing second's sends it refused. A few (up to
# one in ten) is a shard at its limit whose sends arrived bunched (jitter past our side of the wire,
# where no count of ours can see it): the provider's second held as many sends too many as it
# refused, so the pace gives up as many sends a second, earned back within a few sends. A trim by a
# tenth stopped a shard at 80 mps for most of a tenth of a second (its count fell eight under the
# sends already in the trailing second), halving for half a second. Many means the limit is below
# the pace (a number on a lower tier than the campaign was told): halved, so that the pace reaches
# it within seconds.
HALVE_ABOVE_REFUSED_SHARE = 0.1

# The closest two sends may leave, in slots. Sends that left bunched (a GC pause, a thread that
# waited for the GIL, then the ones behind it on time) would otherwise stay bunched: the trailing
# second's count releases a waiting send the instant the oldest of its second turns one second old,
# so a bunch comes back every second, in phase, and the provider's sliding second, a millisecond of
# transit jitter later, holds one send too many (130429s at x.07 s of each second in a make-up run).
# Half a slot apart, a bunch spreads out within a second or two and the count has slack again.
MIN_DEPARTURE_SPACING_SLOTS = 0.5


def _keep_trailing_second(times: deque[float], now: float) -> None:
    """Drops the times a second old or more. A nanosecond's tolerance: a clock's float arithmetic
    must not leave a send waiting for an age of 0.9999999999999999 s to become a full second."""
    while times and now - times[0] >= 1.0 - 1e-9:
        times.popleft()


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
        self._departures: deque[float] = deque()  # when the sends of the trailing second left
        self._refusals: deque[float] = deque()  # when the 130429s of the trailing second came

    def reserve(self) -> float:
        """Take the next send slot; returns how long to wait before using it."""
        with self._lock:
            now = self._clock()
            slot = max(self._next_free, now)
            self._next_free = slot + 1.0 / self.rate
            return slot - now

    def depart(self) -> float:
        """Record a send leaving now, unless the trailing second already holds as many whole sends
        as the pace allows (39 at 39.4), or the last send left less than half a slot ago; then how
        long until neither holds (and nothing is recorded).

        Slots are evenly spaced, but a send can leave late (its thread waited for the GIL, or
        the process paused to collect garbage) while the next ones leave on time: the one
        second after its slot then holds one send more than the pace, and a provider counting
        a sliding second answers 130429. So the departures themselves are counted too.
        """
        with self._lock:
            now = self._clock()
            _keep_trailing_second(self._departures, now)
            if len(self._departures) >= max(1, math.floor(self.rate)):
                return 1.0 - (now - self._departures[0])  # ≥ 1 ns: a wait, never a silent 0
            spacing = MIN_DEPARTURE_SPACING_SLOTS / self.rate
            if self._departures and now - self._departures[-1] < spacing - 1e-9:  # the same nanosecond's tolerance
                return spacing - (now - self._departures[-1])
            self._departures.append(now)
            return 0.0

    def acquire(self) -> float:
        """Wait for the next send slot and for room in the trailing second; returns how long
        that took."""
        started = self._clock()
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        while (wait := self.depart()) > 0:
            self._sleep(wait)
        return self._clock() - started

    def throttled(self) -> None:
        """The provider said 130429: if few of the trailing second's sends were refused, the pace
        gives up as many sends a second as were refused; if many, it halves. Once per second at most."""
        with self._lock:
            now = self._clock()
            self._refusals.append(now)
            _keep_trailing_second(self._departures, now)
            _keep_trailing_second(self._refusals, now)
            if now - self._last_decrease >= 1.0:
                refused = len(self._refusals)
                if refused / max(1, len(self._departures)) > HALVE_ABOVE_REFUSED_SHARE:
                    self.rate = max(self.min_rate, self.rate / 2)
                else:
                    self.rate = max(self.min_rate, self.rate - refused)
                self._last_decrease = now
                # Push the next slot out so that the burst already granted is not sent.
                self._next_free = max(self._next_free, now + 1.0 / self.rate)

    def succeeded(self) -> None:
        """Each accepted send earns back a little pace, up to the target."""
        with self._lock:
            if self.rate < self.target:
                self.rate = min(self.target, self.rate + max(0.05, self.target / 200))


class SendWindow:
    """How many sends a shard keeps in flight: enough to hold its pace, and no more.

    A send holds a slot from its claim to its checkpoint; its work is that time less its wait for
    a rate slot. By Little's law, `rate` sends/s of `work` seconds each need rate × work slots;
    the window keeps a quarter more for the spread of work times, plus one. A fixed window
    would either starve a slow provider (8 slots hold 80 mps only while a send's work stays
    under 100 ms) or, at a low rate, fill its slots with claimed recipients waiting for their
    rate slot, each of them in doubt if the batch dies then. `ceiling` (MAX_IN_FLIGHT) bounds
    the window, and with it the recipients a kill can leave in doubt.
    """

    HEADROOM = 1.25
    WEIGHT = 0.1  # of each new work time in the running mean

    def __init__(self, ceiling: int, work_seconds: float = 0.1):
        self.ceiling = ceiling
        self.work_seconds = work_seconds  # running mean of a send's work; a guess until sends report

    def observe(self, work_seconds: float) -> None:
        self.work_seconds += self.WEIGHT * (work_seconds - self.work_seconds)

    def size(self, rate: float) -> int:
        return max(1, min(self.ceiling, math.ceil(rate * self.work_seconds * self.HEADROOM) + 1))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return (rng or random).uniform(0, ceiling)
