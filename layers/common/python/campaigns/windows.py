"""When a campaign may send: its send window (the hours, in its audience's time zone), and its expiry.

`{"start": "09:00", "end": "20:00", "timezone": "Asia/Kolkata", "days": ["mon", ..., "fri"]}`.
Outside it a campaign's shards park (no Lambda running) until the next opening, which the recovery
schedule wakes; a window whose end is before its start runs across midnight (its days are the days
it opens on). Local times are the zone's, through zoneinfo, so a DST change moves the opening with
the clock: an opening that falls in a spring-forward gap opens at the first moment after it.

A campaign's `expires_at` ends it: no send leaves within a transit's spread of it (so that none
reaches Meta after it), and what is still pending then ends `expired` (campaigns.batch_end).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from .ratelimit import TRANSIT_SPREAD_SECONDS

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def expired(expires_at: float | None, now: float) -> bool:
    """No send may start now: it would reach Meta after the campaign's expiry."""
    return expires_at is not None and now >= expires_at - TRANSIT_SPREAD_SECONDS


def parse_hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class SendHours:
    start: time
    end: time
    zone: ZoneInfo
    days: frozenset[int] | None = None  # weekday numbers (Monday 0); None: every day

    @classmethod
    def of(cls, spec: dict | None) -> SendHours | None:
        """From the campaign's stored `send_window` (validated at creation, api_models.SendWindowIn)."""
        if not spec:
            return None
        days = spec.get("days")
        return cls(parse_hhmm(spec["start"]), parse_hhmm(spec["end"]), ZoneInfo(spec["timezone"]),
                   frozenset(DAYS.index(d) for d in days) if days else None)

    def _opening_of(self, day: datetime) -> float:
        """The window's opening on `day`'s date, in epoch seconds. A start the clock skips (a DST gap)
        opens when the clock jumps past it, the first moment whose local time is at or after it."""
        naive = datetime.combine(day.date(), self.start)
        early, late = sorted(naive.replace(tzinfo=self.zone, fold=f).timestamp() for f in (0, 1))
        if datetime.fromtimestamp(early, self.zone).replace(tzinfo=None) == naive:
            return early  # the wall time exists (the earlier of two, where the clock falls back)
        while late - early > 1:  # in the gap: find the jump, to the second
            middle = (early + late) / 2
            local = datetime.fromtimestamp(middle, self.zone).replace(tzinfo=None)
            early, late = (early, middle) if local >= naive else (middle, late)
        return float(round(late))

    def is_open(self, at: float) -> bool:
        local = datetime.fromtimestamp(at, self.zone)
        now, across_midnight = local.time(), self.end <= self.start
        if not across_midnight:
            return self.start <= now < self.end and self._day_ok(local)
        if now >= self.start:
            return self._day_ok(local)
        return now < self.end and self._day_ok(local - timedelta(days=1))  # opened yesterday

    def next_opening(self, at: float) -> float:
        """`at` if the window is open then, else when it opens next."""
        if self.is_open(at):
            return at
        local = datetime.fromtimestamp(at, self.zone)
        for ahead in range(8):
            day = local + timedelta(days=ahead)
            opening = self._opening_of(day)
            if opening > at and self._day_ok(day):
                return opening
        raise ValueError("a send window with no day to open on")

    def _day_ok(self, local: datetime) -> bool:
        return self.days is None or local.weekday() in self.days
