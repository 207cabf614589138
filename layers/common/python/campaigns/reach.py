"""The messaging limit: unique users a business portfolio reaches in a rolling 24 hours.

Meta limits the users reached by business-initiated messages per portfolio (250, 2 000, 10 000,
100 000 a rolling day), shared by all its numbers, and answers no error for going over it: a
business keeps count itself. A number whose owner set `messaging_limit` (`PUT /numbers/{id}`)
counts here; its portfolio is the one it names, else the number alone.

How it counts, and what it costs: each user reached gets a marker item (`models.Reach`) written
right before its first send in the window, conditioned on there being none from within the window:
a user reached again within it counts once. The portfolio's count is kept by hour of the window in
one item (`models.Quota`), and a batch takes room from it in chunks (`CHUNK` users, or what is left),
with an optimistic lock on the item: one extra write a message (the marker), one a chunk. The count
is conservative: an hour leaves the window when its last second does, and room a dead batch had
taken is not given back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pynamodb.exceptions import DoesNotExist

from .config import Settings
from .models import Number, Quota, Reach, write_if

CHUNK = 20  # users a batch takes room for at once
HOURS = 24  # the window's buckets (an hour each for Meta's day)
RESERVE_ATTEMPTS = 5  # another batch took room between our read and our write: read again


def bucket_seconds(window: float) -> float:
    return window / HOURS


def used_and_next_room(hours: dict, now: float, window: float) -> tuple[int, float | None]:
    """Users counted in the window at `now`, and when its oldest counted bucket leaves it."""
    size = bucket_seconds(window)
    live = {int(b): int(n) for b, n in (hours or {}).items() if (int(b) + 1) * size > now - window and int(n) > 0}
    frees = min(((b + 1) * size + window for b in live), default=None)
    return sum(live.values()), frees


class ReachLimit:
    """A batch's side of its portfolio's messaging limit; called from the send threads."""

    @classmethod
    def of_number(cls, number: Number | None, settings: Settings) -> ReachLimit | None:
        """The limit of the number's portfolio (the one it names, else the number alone), if it has one."""
        if number is None or not number.messaging_limit:
            return None
        return cls(number.portfolio or str(number.phone_number_id or number.PK.split("#", 1)[1]),
                   int(number.messaging_limit), settings.messaging_window_seconds)

    def __init__(self, portfolio: str, limit: int, window: float, clock: Callable[[], float] = time.time):
        self.portfolio, self.limit, self.window, self._clock = portfolio, int(limit), float(window), clock
        self._lock = threading.Lock()
        self._room = 0  # users this batch has taken room for and not used yet
        self.waiting_until: float | None = None  # when room frees, once the limit is reached

    def admit(self, phone: str) -> bool:
        """True if a send to `phone` fits the limit now (counting the user if it is new in the window)."""
        with self._lock:
            has_room = self._room > 0 or self._take_room()
            if has_room:
                self._room -= 1
        if not has_room:
            return self._reached_within_window(phone)  # a user already counted needs no room
        if not self._mark(phone):
            with self._lock:
                self._room += 1  # reached within the window already: it counts once, and it was counted
        return True

    def _mark(self, phone: str) -> bool:
        """True if this is the user's first send in the window (its marker written now)."""
        now = self._clock()
        marker = Reach(*Reach.key(self.portfolio, phone))
        return write_if(marker, [Reach.reached_at.set(now)],
                        Reach.reached_at.does_not_exist() | (Reach.reached_at <= now - self.window))

    def _reached_within_window(self, phone: str) -> bool:
        try:
            marker = Reach.get(*Reach.key(self.portfolio, phone), consistent_read=True)
        except DoesNotExist:
            return False
        return marker.reached_at is not None and marker.reached_at > self._clock() - self.window

    def _take_room(self) -> bool:
        for _ in range(RESERVE_ATTEMPTS):
            now = self._clock()
            try:
                quota = Quota.get(*Quota.key(self.portfolio), consistent_read=True)
                hours, version = (quota.hours.as_dict() if quota.hours else {}), int(quota.version or 0)
            except DoesNotExist:
                hours, version = {}, None
            used, frees = used_and_next_room(hours, now, self.window)
            wanted = min(CHUNK, self.limit - used)
            if wanted <= 0:
                self.waiting_until = frees
                return False
            if self._record(hours, version, wanted, now):
                self._room += wanted
                self.waiting_until = None
                return True
        return False

    def _record(self, hours: dict, version: int | None, wanted: int, now: float) -> bool:
        """Count `wanted` more users in the current bucket, if nobody changed the count since we read it."""
        bucket = str(int(now // bucket_seconds(self.window)))
        item = Quota(*Quota.key(self.portfolio))
        if version is None:  # the portfolio's first users
            return write_if(item, [Quota.hours.set({bucket: wanted}), Quota.version.set(1)], Quota.version.does_not_exist())
        size = bucket_seconds(self.window)
        gone = [b for b in hours if (int(b) + 1) * size <= now - self.window and b != bucket]
        actions = [Quota.version.set(version + 1), *(Quota.hours[b].remove() for b in gone)]
        actions.append(Quota.hours[bucket].set((Quota.hours[bucket] | 0) + wanted))
        return write_if(item, actions, Quota.version == version)
