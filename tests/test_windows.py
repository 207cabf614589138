"""A campaign's send window (campaigns/windows.py): open or closed at a moment, and its next opening."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from campaigns.windows import SendHours

KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


def hours(**spec) -> SendHours:
    return SendHours.of({"start": "09:00", "end": "20:00", "timezone": "Asia/Kolkata", **spec})


@pytest.mark.parametrize(("moment", "is_open"), [
    ((2026, 12, 1, 8, 59), False), ((2026, 12, 1, 9, 0), True), ((2026, 12, 1, 19, 59), True),
    ((2026, 12, 1, 20, 0), False), ((2026, 12, 1, 23, 0), False),
])
def test_a_day_window_is_open_from_its_start_to_its_end_in_its_zone(moment, is_open):
    assert hours().is_open(at(KOLKATA, *moment)) is is_open


def test_outside_it_the_next_opening_is_the_next_start_on_an_allowed_day():
    window = hours()
    assert window.next_opening(at(KOLKATA, 2026, 12, 1, 21, 0)) == at(KOLKATA, 2026, 12, 2, 9, 0)
    assert window.next_opening(at(KOLKATA, 2026, 12, 1, 10, 0)) == at(KOLKATA, 2026, 12, 1, 10, 0)  # open now
    weekdays = hours(days=["mon", "tue", "wed", "thu", "fri"])  # 2026-12-04 is a Friday
    assert weekdays.next_opening(at(KOLKATA, 2026, 12, 4, 21, 0)) == at(KOLKATA, 2026, 12, 7, 9, 0)
    assert not weekdays.is_open(at(KOLKATA, 2026, 12, 5, 10, 0))  # Saturday


def test_a_window_across_midnight_belongs_to_the_day_it_opens():
    night = hours(start="22:00", end="06:00", days=["fri"])  # Friday 22:00 to Saturday 06:00
    assert night.is_open(at(KOLKATA, 2026, 12, 4, 23, 0))
    assert night.is_open(at(KOLKATA, 2026, 12, 5, 5, 59))  # Saturday morning: Friday's window
    assert not night.is_open(at(KOLKATA, 2026, 12, 5, 23, 0))  # Saturday night: not a Friday
    assert night.next_opening(at(KOLKATA, 2026, 12, 5, 7, 0)) == at(KOLKATA, 2026, 12, 11, 22, 0)


def test_dst_moves_the_opening_with_the_local_clock():
    window = hours(start="02:30", end="05:00", timezone="America/New_York")
    # 2026-03-08: clocks jump from 02:00 to 03:00; 02:30 does not exist, the window opens at 03:00.
    assert window.next_opening(at(NEW_YORK, 2026, 3, 8, 1, 0)) == at(NEW_YORK, 2026, 3, 8, 3, 0)
    # The day after, 02:30 local again, an hour earlier in UTC terms than before the change.
    assert window.next_opening(at(NEW_YORK, 2026, 3, 8, 6, 0)) == at(NEW_YORK, 2026, 3, 9, 2, 30)
