"""The messaging limit on the store (campaigns/reach.py): unique users a rolling window, the clock injected."""

from __future__ import annotations

from campaigns.reach import CHUNK, ReachLimit, used_and_next_room

WINDOW = 2400.0  # 24 buckets of 100 s


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_count_is_of_the_buckets_still_in_the_window_and_room_frees_with_the_oldest():
    hours = {"10": 5, "20": 3, "33": 0}  # buckets of 100 s
    assert used_and_next_room(hours, now=2500.0, window=WINDOW) == (8, 1100.0 + WINDOW)
    assert used_and_next_room(hours, now=3500.0, window=WINDOW) == (3, 2100.0 + WINDOW)
    assert used_and_next_room({}, now=0.0, window=WINDOW) == (0, None)


def test_a_limit_admits_that_many_users_counts_a_user_once_and_frees_room_as_the_window_rolls(table):
    clock = Clock(1_000_000.0)
    limit = ReachLimit("p1", 3, WINDOW, clock)
    phones = ["919800000000", "919800000000", "919800000001", "919800000002", "919800000003"]
    # The first user reached twice counts once: three users fit, the fourth does not.
    assert [limit.admit(phone) for phone in phones] == [True, True, True, True, False]
    assert limit.admit("919800000001")  # at the limit, a user already counted still goes
    assert limit.waiting_until == (1_000_000.0 // 100 + 1) * 100 + WINDOW
    other = ReachLimit("p1", 3, WINDOW, clock)  # another batch of the same portfolio sees the same count
    assert not other.admit("919800000009")
    clock.now = limit.waiting_until
    assert ReachLimit("p1", 3, WINDOW, clock).admit("919800000009")  # room freed as its hour left the window


def test_batches_take_room_in_chunks_and_never_past_the_limit_together(table):
    clock = Clock(1_000_000.0)
    batches = [ReachLimit("p2", CHUNK + 5, WINDOW, clock) for _ in range(3)]
    admitted = sum(b.admit(f"9198{n:08d}") for n in range(100) for b in batches[n % 3:n % 3 + 1])
    assert admitted == CHUNK + 5


def test_send_is_told_how_many_fit_the_limit_now(table):
    from campaigns import numbers
    from campaigns.config import settings

    numbers.configure("5550007", 80, messaging_limit=CHUNK + 5)
    limit = ReachLimit("5550007", CHUNK + 5, settings().messaging_window_seconds)
    assert limit.admit("919800000001") and limit.admit("919800000002")
    # The room a sending batch has taken counts as reached (a chunk), so that others never overrun it.
    assert numbers.fits_now("5550007", pending=10) == 5
    assert numbers.fits_now("5550007", pending=2) == 2
    assert numbers.fits_now("5550008", pending=10) is None  # no limit set
