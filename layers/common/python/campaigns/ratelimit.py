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

# How much later than the sends around it a send may reach the provider: its thread records the
# departure, then may wait for the GIL behind the batch's other threads before its bytes are on the
# wire (1 ms at the median, up to 18 ms, in a one-shard run against dynalite). A provider counting a
# sliding second refuses the send that such a late neighbour pushes over an exact limit, so any
# 1 + TRANSIT_SPREAD_SECONDS of departures hold at most the limit's whole sends: 80 in 1.02 s, a
# pace of 78.4 at a limit of 80. (One under the limit a second, the rule before, absorbed 12 ms and
# drew 1-3 refusals a run.)
TRANSIT_SPREAD_SECONDS = 0.02

# A batch's first second is slower still to reach the wire: its sends open the pool's connections
# (a TLS handshake each on AWS) and run its code paths cold, while its threads start. They reached
# the provider up to 76 ms after they left (a make-up run), against 1 ms from the second second
# on, and refused sends a second later. The departures of a limiter's first COLD_SECONDS count for
# this much longer: five sends fewer, once a batch.
COLD_SECONDS = 1.0
COLD_TRANSIT_SPREAD_SECONDS = 0.1

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
    """Holds a shard's sends under `rate`, the most the provider takes a second (the shard's share of
    the campaign's rate, cut by throttling): slots at `pace`, and the departures themselves counted."""

    WINDOW_SECONDS = 1.0 + TRANSIT_SPREAD_SECONDS  # the departures counted against the rate

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
        self._warm_from = self._next_free + COLD_SECONDS
        self._last_decrease = float("-inf")
        self._departures: deque[float] = deque()  # when the sends that still count left
        self._refusals: deque[float] = deque()  # when the 130429s of the trailing second came

    @property
    def pace(self) -> float:
        """Sends a second the slots are spaced for: the rate over the window that counts them."""
        return self.rate / self.WINDOW_SECONDS

    def reserve(self) -> float:
        """Take the next send slot; returns how long to wait before using it."""
        with self._lock:
            now = self._clock()
            slot = max(self._next_free, now)
            self._next_free = slot + 1.0 / self.pace
            return slot - now

    def depart(self) -> float:
        """Record a send leaving now, unless the departures still counted (those of the last
        WINDOW_SECONDS; of the first second, for COLD_TRANSIT_SPREAD_SECONDS longer) already hold as
        many whole sends as the rate allows (39 at 39.4), or the last send left less than half a
        slot ago; then how long until neither holds (and nothing is recorded).

        Slots are evenly spaced, but a send can leave late (its thread waited for the GIL, or
        the process paused to collect garbage) while the next ones leave on time: the one
        second after its slot then holds one send more than the pace, and a provider counting
        a sliding second answers 130429. So the departures themselves are counted too, over a
        window longer than the provider's second by the transit spread it must absorb.
        """
        with self._lock:
            now = self._clock()
            self._forget_uncounted(now)
            if len(self._departures) >= max(1, math.floor(self.rate)):
                return self._counted_until(self._departures[0]) - now  # ≥ 1 ns: a wait, never a silent 0
            spacing = MIN_DEPARTURE_SPACING_SLOTS / self.pace
            if self._departures and now - self._departures[-1] < spacing - 1e-9:  # the same nanosecond's tolerance
                return spacing - (now - self._departures[-1])
            self._departures.append(now)
            return 0.0

    def _counted_until(self, departed: float) -> float:
        spread = COLD_TRANSIT_SPREAD_SECONDS if departed < self._warm_from else TRANSIT_SPREAD_SECONDS
        return departed + 1.0 + spread

    def _forget_uncounted(self, now: float) -> None:
        """Drops the departures that no longer count, oldest first (the nanosecond's tolerance of
        _keep_trailing_second). A cold one ahead keeps the warm ones behind it a little longer: safe."""
        while self._departures and now >= self._counted_until(self._departures[0]) - 1e-9:
            self._departures.popleft()

    def acquire(self) -> float:
        """Wait for the next send slot and for room in the trailing second; returns how long
        that took."""
        return self.wait_for_slot() + self.leave()

    def wait_for_slot(self) -> float:
        """Take the next send slot and wait for it (the long wait: up to the pace's spacing times
        the sends queued ahead); returns how long that took."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def leave(self) -> float:
        """Wait until the departures counted leave room (rarely more than a few milliseconds once
        the slot has come), and record this send's departure; returns how long that took."""
        started = self._clock()
        while (wait := self.depart()) > 0:
            self._sleep(wait)
        return self._clock() - started

    def throttled(self) -> None:
        """The provider said 130429: if few of the trailing second's sends were refused, the pace
        gives up as many sends a second as were refused; if many, it halves. Once per second at most."""
        with self._lock:
            now = self._clock()
            self._refusals.append(now)
            self._forget_uncounted(now)
            _keep_trailing_second(self._refusals, now)
            if now - self._last_decrease >= 1.0:
                refused = len(self._refusals)
                if refused / max(1, len(self._departures)) > HALVE_ABOVE_REFUSED_SHARE:
                    self.rate = max(self.min_rate, self.rate / 2)
                else:
                    self.rate = max(self.min_rate, self.rate - refused)
                self._last_decrease = now
                # Push the next slot out so that the burst already granted is not sent.
                self._next_free = max(self._next_free, now + 1.0 / self.pace)

    def set_limit(self, rate: float) -> None:
        """The number's budget (campaigns/budget.py) gave this shard a new share: the target moves to
        it at once, and the pace with it, less what 130429s took off (earned back as before)."""
        with self._lock:
            taken_off = self.target - self.rate
            self.target = float(rate)
            self.rate = max(self.min_rate, self.target - taken_off)

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
