"""What a shard achieves: sends the provider accepted over a trailing window, as a rate, and when
such a figure, written on the shard item by a heartbeat, still says something about now.

The limiter's pace is what a shard allows itself; a slow provider, a busy store or a starved
process keep it under that pace, and only counting the sends that went through tells. The
batch counts each accepted send as its main loop collects it (one checkpoint write after the
provider's answer) and its heartbeat flushes the figure onto the shard
item with the stamp of when it was measured (`Shard.achieved_rate`, `Shard.measured_at`): no
write of its own, none per message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from .models import Shard

# The trailing window the achieved rate is measured over. Long enough that a send more or less at
# its edges moves an 80-mps figure by 0.25 % per send (a batch holds up to MAX_IN_FLIGHT sends
# between the provider's answer and the count, so the figure can lag by that many), short enough
# that a stall or a slow provider shows within seconds, and an ETA follows it.
WINDOW_SECONDS = 5.0


class AchievedRate:
    """Accepted sends over the trailing `window` seconds, per second.

    Younger than its window (a batch that just started), it divides by its age instead: the
    figure is the rate since it started, not a ramp that understates it for `window` seconds.
    Only the batch's main loop uses it (no lock).
    """

    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self._clock = clock
        self._started = clock()
        self._accepted: deque[float] = deque()  # when each send of the window was counted

    def accepted(self) -> None:
        now = self._clock()
        self._accepted.append(now)
        self._forget_before(now - self.window)  # bounded even if nobody asks for the rate

    def rate(self) -> float:
        now = self._clock()
        self._forget_before(now - self.window)
        span = min(self.window, now - self._started)
        return len(self._accepted) / span if span > 0 else 0.0

    def shard_actions(self, pace: float) -> list:
        """The shard item's live figures, stamped now: this rate and the limiter's `pace`."""
        return [Shard.achieved_rate.set(round(self.rate(), 2)), Shard.pace.set(round(pace, 2)),
                Shard.measured_at.set(time.time())]

    def _forget_before(self, start: float) -> None:
        while self._accepted and self._accepted[0] <= start:
            self._accepted.popleft()


def fresh_for(heartbeat_seconds: float, clock_skew_seconds: float) -> float:
    """How long a shard's figures count after they were measured.

    A live batch measures them again at every heartbeat. One that has been silent for a whole
    window (or three heartbeats, if those are longer) has stopped or died: its last figure is
    about a window that is over, and a dead batch's must not count for ever. The stamp is the
    sender's clock, read by another process: the clocks' allowed skew is added.
    """
    return max(WINDOW_SECONDS, 3 * heartbeat_seconds) + clock_skew_seconds


def is_fresh(measured_at: float | None, now: float, heartbeat_seconds: float, clock_skew_seconds: float) -> bool:
    return measured_at is not None and now - float(measured_at) <= fresh_for(heartbeat_seconds, clock_skew_seconds)
