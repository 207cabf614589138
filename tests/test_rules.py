"""Unit tests of the tables and arithmetic: error classes, transitions, pacing, backoff, settings."""

from __future__ import annotations

import math
import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.achieved import AchievedRate, is_fresh
from campaigns.config import Settings
from campaigns.graph_errors import ErrorClass, classify
from campaigns.observability import mask_phone
from campaigns.ratelimit import TRANSIT_SPREAD_SECONDS, RateLimiter, SendWindow, backoff_delay
from campaigns.readahead import ReadAhead
from campaigns.states import (
    CAMPAIGN_ACTIONS,
    CAMPAIGN_TRANSITIONS,
    OPEN_RECIPIENT,
    RECIPIENT_TRANSITIONS,
    TERMINAL_RECIPIENT,
    CampaignStatus,
    RecipientStatus,
    sources_of,
)
from campaigns.whatsapp import template_payload


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (130429, ErrorClass.THROTTLED),
        (131056, ErrorClass.RETRY_RECIPIENT),
        (131000, ErrorClass.RETRYABLE),
        (131016, ErrorClass.RETRYABLE),
        (1, ErrorClass.RETRYABLE),
        (2, ErrorClass.RETRYABLE),
        (131026, ErrorClass.RECIPIENT),
        (131050, ErrorClass.SUPPRESS),
        (132005, ErrorClass.RECIPIENT),
        (100, ErrorClass.RECIPIENT),
        (131008, ErrorClass.RECIPIENT),
        (131009, ErrorClass.RECIPIENT),
        (190, ErrorClass.FATAL),
        (0, ErrorClass.FATAL),
        (10, ErrorClass.FATAL),
        (200, ErrorClass.FATAL),
        (299, ErrorClass.FATAL),
        (368, ErrorClass.FATAL),
        (131031, ErrorClass.FATAL),
        (131048, ErrorClass.FATAL),
        (4, ErrorClass.FATAL),
        (80007, ErrorClass.FATAL),
        (132000, ErrorClass.FATAL),
        (132001, ErrorClass.FATAL),
        (132012, ErrorClass.FATAL),
        (132015, ErrorClass.FATAL),
        (132016, ErrorClass.FATAL),
    ],
)
def test_every_code_of_the_design_has_its_class(code, expected):
    assert classify(code) == expected


def test_unknown_codes_are_retryable_on_5xx_and_recipient_failures_otherwise():
    assert classify(999999, http_status=503) == ErrorClass.RETRYABLE
    assert classify(999999, http_status=400) == ErrorClass.RECIPIENT
    assert classify(300, http_status=400) == ErrorClass.RECIPIENT


def test_terminal_recipients_never_go_back_to_open_without_a_person_or_the_policy():
    # Only retry-failed (failed -> pending) and policy resend (in_doubt -> pending) reopen one.
    reopening = {(src, dst) for src, dsts in RECIPIENT_TRANSITIONS.items() for dst in dsts
                 if src in TERMINAL_RECIPIENT and dst in OPEN_RECIPIENT}
    assert reopening == {(RecipientStatus.FAILED, RecipientStatus.PENDING),
                         (RecipientStatus.IN_DOUBT, RecipientStatus.PENDING)}
    assert sources_of(RecipientStatus.SENDING) == {RecipientStatus.PENDING}


def test_the_campaign_lifecycle_is_the_designs():
    """DESIGN.md's lifecycle written out here, not read back from states.py: each action, the statuses
    it may start from and where it leads; cancelled and the rest reachable only that way."""
    written = {action: ({s.value for s in sources}, target.value) for action, (sources, target) in
               CAMPAIGN_ACTIONS.items()}
    assert written == {
        "schedule": ({"draft"}, "scheduled"),
        "send": ({"draft", "scheduled"}, "sending"),
        "pause": ({"sending"}, "paused"),
        "resume": ({"paused"}, "sending"),
        "cancel": ({"draft", "scheduled", "sending", "paused"}, "cancelled"),
        "retry-failed": ({"completed"}, "sending"),
    }
    assert {s.value: {t.value for t in targets} for s, targets in CAMPAIGN_TRANSITIONS.items()} == {
        "draft": {"scheduled", "sending", "cancelled"},
        # draft: a scheduled campaign's send_at removed; paused: Meta paused its template first
        "scheduled": {"sending", "draft", "paused", "cancelled"},
        "sending": {"paused", "completed", "cancelled"},
        "paused": {"sending", "scheduled", "cancelled"},  # scheduled: Meta's pause over before its send_at
        "completed": {"sending"},  # retry-failed
        "cancelled": set(),
    }


@given(st.lists(st.sampled_from(sorted(CAMPAIGN_ACTIONS)), max_size=30))
def test_any_sequence_of_actions_stays_inside_the_state_machine(actions):
    status = CampaignStatus.DRAFT
    for action in actions:
        sources, target = CAMPAIGN_ACTIONS[action]
        if status in sources:
            assert target in CAMPAIGN_TRANSITIONS[status]
            status = target
    assert status in CampaignStatus


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_limiter_paces_sends_at_its_rate_over_the_window_that_absorbs_transit_spread():
    clock = FakeClock()
    limiter = RateLimiter(40, clock=clock, sleep=clock.sleep)
    left = []
    for _ in range(400):
        limiter.acquire()
        left.append(clock.now)
    assert limiter.pace == pytest.approx(40 / (1 + TRANSIT_SPREAD_SECONDS))
    after_the_first_seconds = left[100:]
    assert (after_the_first_seconds[-1] - after_the_first_seconds[0]) / 299 == pytest.approx(1 / limiter.pace)

    def in_second(n):
        return sum(1 for t in left if n <= t < n + 1)

    # The first second's sends count longer (they are slow to reach the wire): the next one holds fewer.
    assert in_second(1) < in_second(2) <= 40


def test_limiter_gives_up_the_refused_sends_on_a_few_halves_on_many_and_earns_it_back():
    clock = FakeClock()
    limiter = RateLimiter(80, clock=clock, sleep=clock.sleep)
    for _ in range(40):  # sends at the limit, one refused: jitter
        limiter.acquire()
    limiter.throttled()
    assert limiter.rate == pytest.approx(79)  # the refused send, a second
    for _ in range(39):
        limiter.acquire()
    limiter.throttled()
    limiter.throttled()  # within the second of the last decrease: counted, not acted on
    assert limiter.rate == pytest.approx(79)
    clock.now += 0.6
    limiter.acquire()
    limiter.throttled()  # three refused in the trailing second, under a tenth of its sends: three off
    assert limiter.rate == pytest.approx(76)
    clock.now += 1.0
    for _ in range(10):  # ten sends, and as many refusals: the limit is below the pace
        limiter.acquire()
        limiter.throttled()
    assert limiter.rate == pytest.approx(38)
    for _ in range(10_000):
        limiter.succeeded()
    assert limiter.rate == 80


def test_a_limit_below_the_pace_is_reached_within_seconds():
    """A number on a lower tier than the campaign was told: most sends are refused, and the pace
    comes down to the limit in a few seconds."""
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    seconds = 0
    while limiter.rate > 80:
        second_ends = clock.now + 1.0
        while clock.now < second_ends:
            limiter.acquire()
            if limiter.rate > 80:  # a provider that takes 80 a second refuses the rest
                limiter.throttled()
        seconds += 1
    assert seconds <= 6


def test_limiter_acquire_reports_the_wait_for_its_slot():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(1 / limiter.pace)


def test_a_send_that_leaves_late_does_not_crowd_the_second_after_its_slot():
    """Twenty sends take their slots at 10/s; the one of the 0.9-s slot is held up 0.15 s (its
    thread waited for the GIL) while the others leave on time. Counted at their slots alone, the
    second from 0.95 s would hold eleven sends: one over what a sliding-second provider takes."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    slots = [clock.now + limiter.reserve() for _ in range(21)]
    wanted = sorted((slot + (0.15 if n == 9 else 0.0), n) for n, slot in enumerate(slots))
    left = []
    for at, _ in wanted:
        clock.now = max(clock.now, at)
        while (wait := limiter.depart()) > 0:
            clock.sleep(wait)
        left.append(clock.now)
    def busiest_second(times):
        return max(sum(1 for t in times if start <= t < start + 1.0 - 1e-9) for start in times)

    assert busiest_second([at for at, _ in wanted]) == 11  # leaving when the slots said
    assert busiest_second(left) == 10
    assert left[-1] > slots[-1]  # the second after the late send's slot waited for room


# The longest a send took from its departure to the provider's count (ratelimit.py): in a batch's
# first second, and from then on.
MEASURED_COLD_TRANSIT, MEASURED_TRANSIT = 0.076, 0.018


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=0.5), st.floats(min_value=0, max_value=1)),
                min_size=1, max_size=100),
       st.sampled_from([1, 5, 10, 20.5, 80]))
def test_however_late_sends_leave_the_providers_second_never_holds_more_than_the_rate(delays, rate):
    """Each send is held up by its own delay after its slot (threads, pauses) and then by its own
    transit, up to the longest measured: a provider counting a sliding second of arrivals still
    never holds more than the rate's whole sends (rounded down: 20 at 20.5)."""
    clock = FakeClock()
    started = clock.now
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    slots = [clock.now + limiter.reserve() for _ in delays]
    arrivals = []
    for at, transit in sorted((slot + late, share) for slot, (late, share) in zip(slots, delays, strict=True)):
        clock.now = max(clock.now, at)
        while (wait := limiter.depart()) > 0:
            clock.sleep(wait)
        longest = MEASURED_COLD_TRANSIT if clock.now < started + 1.0 else MEASURED_TRANSIT
        arrivals.append(clock.now + transit * longest)
    arrivals.sort()
    assert all(sum(1 for t in arrivals if start <= t < start + 1.0 - 1e-9) <= max(1, math.floor(rate)) for start in arrivals)


def _accept_at(meter: AchievedRate, clock: FakeClock, rate: float, seconds: float) -> None:
    """`rate` accepted sends a second for `seconds`, evenly spaced, on the fake clock."""
    for _ in range(round(rate * seconds)):
        clock.now += 1 / rate
        meter.accepted()


ONE_SEND_IN_5_S = 1 / 5 + 1e-9  # evenly spaced sends: the window's edge may hold one more or one less


def test_achieved_rate_counts_the_accepted_sends_of_the_trailing_window():
    clock = FakeClock()
    meter = AchievedRate(window=5.0, clock=clock)
    _accept_at(meter, clock, 40, 20)
    assert meter.rate() == pytest.approx(40, abs=ONE_SEND_IN_5_S)
    _accept_at(meter, clock, 10, 5)  # the provider slowed down: a window later, that is all it says
    assert meter.rate() == pytest.approx(10, abs=ONE_SEND_IN_5_S)
    clock.now += 2.0  # a stall: the sends of the last 2 s are missing from the window
    assert meter.rate() == pytest.approx(10 * 3 / 5, abs=ONE_SEND_IN_5_S)
    clock.now += 3.0
    assert meter.rate() == 0.0


def test_achieved_rate_of_a_batch_younger_than_its_window_is_its_rate_so_far():
    clock = FakeClock()
    meter = AchievedRate(window=5.0, clock=clock)
    assert meter.rate() == 0.0  # nothing yet, and no division by an age of zero
    _accept_at(meter, clock, 40, 2)
    assert meter.rate() == pytest.approx(40)  # not 80 sends over 5 s (16)


def test_achieved_rate_forgets_what_left_the_window_even_unasked():
    clock = FakeClock()
    meter = AchievedRate(window=5.0, clock=clock)
    _accept_at(meter, clock, 80, 60)
    assert len(meter._accepted) <= 80 * 5 + 1


def test_a_figure_is_fresh_for_a_window_or_three_heartbeats_plus_the_clock_skew():
    assert is_fresh(100.0, 105.5, heartbeat_seconds=1, clock_skew_seconds=0.5)
    assert not is_fresh(100.0, 105.6, heartbeat_seconds=1, clock_skew_seconds=0.5)
    assert is_fresh(100.0, 130.0, heartbeat_seconds=10, clock_skew_seconds=0)  # slow heartbeats: 3 of them
    assert not is_fresh(100.0, 130.1, heartbeat_seconds=10, clock_skew_seconds=0)
    assert not is_fresh(None, 100.0, heartbeat_seconds=1, clock_skew_seconds=0)  # never measured


def test_send_window_holds_the_pace_by_littles_law():
    window = SendWindow(ceiling=32)
    for _ in range(200):
        window.observe(0.25)  # a slow provider: a send's claim, POST and checkpoint take 250 ms
    assert window.work_seconds == pytest.approx(0.25)
    assert window.size(rate=40) == 14  # 40/s × 0.25 s = 10 busy slots, a quarter more, plus one
    assert window.size(rate=4) == 3  # a slow campaign keeps few recipients claimed ahead
    assert window.size(rate=400) == 32  # never past MAX_IN_FLIGHT: the in-doubt bound per kill


def test_send_window_follows_the_work_time_as_it_changes():
    window = SendWindow(ceiling=64)
    for _ in range(200):
        window.observe(0.05)
    fast = window.size(rate=60)  # 60/s × 0.05 s × 1.25 = 3.75 → 4, plus one
    for _ in range(200):
        window.observe(0.42)
    assert (fast, window.size(rate=60)) == (5, 33)  # 60/s × 0.42 s × 1.25 = 31.5 → 32, plus one


@given(st.lists(st.floats(min_value=0, max_value=30), max_size=50), st.floats(min_value=0, max_value=2000),
       st.integers(min_value=1, max_value=64))
def test_send_window_is_never_empty_nor_past_its_ceiling(work_times, rate, ceiling):
    window = SendWindow(ceiling)
    for seconds in work_times:
        window.observe(seconds)
    assert 1 <= window.size(rate) <= ceiling


@given(st.integers(min_value=0, max_value=50), st.floats(min_value=0.01, max_value=5),
       st.floats(min_value=0.1, max_value=120), st.integers())
def test_backoff_is_capped_exponential_with_jitter(attempt, base, cap, seed):
    delay = backoff_delay(attempt, base, cap, random.Random(seed))
    assert 0 <= delay <= min(cap, base * 2**attempt)


def test_sends_that_come_late_together_leave_half_a_slot_apart():
    """A bunch (a GC pause, then every thread at once) leaves spread out instead of bunched: left
    bunched, the trailing second's count would release the same bunch again every second."""
    clock = FakeClock()
    limiter = RateLimiter(80, clock=clock, sleep=clock.sleep)
    left = []
    for _ in range(10):  # ten threads whose slots have all passed: they ask at the same instant
        while (wait := limiter.depart()) > 0:
            clock.sleep(wait)
        left.append(clock.now)
    gaps = [b - a for a, b in zip(left, left[1:], strict=False)]
    assert min(gaps) == pytest.approx(0.5 / limiter.pace)


def test_backoff_jitter_spreads_over_the_whole_range():
    """Full jitter: uniform in [0, ceiling], so retries of many recipients spread out, and a retry
    waits half the ceiling on average (a backoff of 0 would pass the bound above)."""
    rng = random.Random(7)
    ceilings = {attempt: min(60.0, 1.0 * 2**attempt) for attempt in (1, 3, 8)}
    for attempt, ceiling in ceilings.items():
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(4000)]
        assert sum(delays) / len(delays) == pytest.approx(ceiling / 2, rel=0.05)
        assert min(delays) < 0.02 * ceiling and max(delays) > 0.98 * ceiling


def test_a_lease_too_short_for_one_request_is_refused():
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        Settings(lease_seconds=10, read_timeout_seconds=10)
    settings = Settings()
    # Production defaults: a holder stops posting well before its lease can be taken over.
    assert settings.lease_seconds - settings.lease_safety_seconds > 10 * settings.heartbeat_seconds
    assert settings.stop_margin_seconds > settings.read_timeout_seconds + settings.connect_timeout_seconds


def test_template_variables_are_filled_and_the_callback_is_on_every_send():
    template = {"name": "offer", "language": "en_US",
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}} gets {{2}}"}]}]}
    payload = template_payload("919876543210", template, ["Asha", "20%"], "c1:0:7")
    assert payload["template"]["components"][0]["parameters"][0]["text"] == "Asha gets 20%"
    assert payload["biz_opaque_callback_data"] == "c1:0:7"
    assert payload["to"] == "919876543210"


def test_phone_numbers_are_masked_for_logs():
    assert mask_phone("+919876543210") == "919*******10"
    assert "98765" not in mask_phone("919876543210")


def test_read_ahead_yields_every_item_in_order_then_stops():
    reader = ReadAhead(iter(range(1000)), buffer=7)
    assert list(reader) == list(range(1000))
    assert next(reader, "end") == "end"


def test_read_ahead_raises_the_readers_error_where_the_caller_iterates():
    def failing():
        yield 1
        raise RuntimeError("store unavailable")

    reader = ReadAhead(failing(), buffer=2)
    assert next(reader) == 1
    with pytest.raises(RuntimeError, match="store unavailable"):
        next(reader)


def test_a_closed_read_ahead_stops_reading():
    produced = []
    finished = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                produced.append(n)
                yield n
                n += 1
        finally:
            finished.set()

    reader = ReadAhead(endless(), buffer=3)
    assert next(reader) == 0
    reader.close()
    assert next(reader, "end") == "end"
    assert finished.wait(timeout=10)  # the reader thread let go of the source
    assert len(produced) <= 1 + 3 + 1  # taken, buffered, and the one it held when it was closed
