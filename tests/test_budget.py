"""One throughput budget per number (campaigns/budget.py): the split, and the roster on the store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaigns.budget import DEFAULT_THROUGHPUT_MPS, Budget, fair_shares
from campaigns.config import settings
from campaigns.models import Number


def test_a_number_is_split_max_min_fair_each_ask_its_ceiling():
    assert fair_shares({"a": 20, "b": 20}, 20) == {"a": 10, "b": 10}
    assert fair_shares({"a": 5, "b": 80}, 20) == {"a": 5, "b": 15}  # the small ask leaves the rest
    assert fair_shares({"a": 5, "b": 6}, 80) == {"a": 5, "b": 6}  # room to spare: each its ask
    assert fair_shares({}, 80) == {}


@given(st.dictionaries(st.text(min_size=1, max_size=4), st.floats(min_value=0.5, max_value=1000), max_size=12),
       st.floats(min_value=1, max_value=1000))
def test_the_shares_never_exceed_the_number_nor_an_ask_and_leave_nothing_unused_that_is_asked(asks, limit):
    shares = fair_shares(asks, limit)
    assert sum(shares.values()) <= limit * (1 + 1e-9)
    assert all(shares[k] <= asks[k] * (1 + 1e-9) for k in asks)
    if sum(asks.values()) > limit:  # the number is fully given out, and nobody's ask is cut below an equal share
        assert sum(shares.values()) == pytest.approx(limit)
        assert all(shares[k] == pytest.approx(asks[k]) or shares[k] >= max(shares.values()) * (1 - 1e-9)
                   for k in asks)
    else:
        assert shares == pytest.approx(asks)


def test_shards_on_one_number_share_it_and_a_leaving_one_gives_its_share_back(table):
    Number(*Number.key("77")).update(actions=[Number.throughput_mps.set(20)])
    a = Budget("77", "c1:0", 20.0, "batch-a", settings())
    b = Budget("77", "c2:0", 20.0, "batch-b", settings())
    other = Budget("78", "c3:0", 20.0, "batch-c", settings())
    assert a.renew() == 20.0
    assert b.renew() == 10.0 and a.renew() == 10.0
    assert other.renew() == 20.0  # another number: its own budget (Meta's default of 80 > its ask)
    b.leave()
    assert a.renew() == 20.0


def test_a_dead_batchs_entry_stops_counting_and_its_late_leave_spares_its_successor(table):
    a = Budget("77", "c1:0", 60.0, "batch-a", settings())
    dead = Budget("77", "c2:0", 60.0, "batch-dead", settings())
    now = 1_800_000_000.0
    dead.renew(now)
    assert a.renew(now) == DEFAULT_THROUGHPUT_MPS / 2
    assert a.renew(now + dead.ttl + 0.001) == 60.0  # the dead batch's entry ran out
    successor = Budget("77", "c2:0", 60.0, "batch-next", settings())  # took the shard over
    successor.renew(now + dead.ttl + 0.001)
    dead.leave()  # the dead batch's leave, late (a zombie): conditioned on its own entry
    assert a.renew(now + dead.ttl + 0.002) == DEFAULT_THROUGHPUT_MPS / 2
