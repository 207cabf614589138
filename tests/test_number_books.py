"""Dedupe across imports through the number books (campaigns/imports.py): whatever the sequence of
imports, some dying before their commit, a campaign holds each number once, each import's report says
which of its numbers were new, and the books lead from a number to its recipient. And what they cost:
an import writes one book per bucket its numbers fall in, each under a write unit."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.dynamo import item_size, metered
from campaigns import imports, ledger, service
from campaigns.config import settings as app_settings
from campaigns.models import NumberBook, recipient_place

RATE_OF_THREE_SHARDS = 200  # shard_rate 80: recipients dealt round three shards


def _pool() -> list[str]:
    """Twelve numbers, four of them in one bucket and two in another, so books hold several numbers."""
    by_bucket: dict[int, list[str]] = {}
    n = 0
    while True:
        phone = f"9198{n:08d}"
        by_bucket.setdefault(imports.bucket_of(phone), []).append(phone)
        n += 1
        crowded = sorted(by_bucket.values(), key=len, reverse=True)
        if len(crowded[0]) >= 4 and len(crowded[1]) >= 2 and len(by_bucket) >= 8:
            return crowded[0][:4] + crowded[1][:2] + [bucket[0] for bucket in crowded[2:8]]


POOL = _pool()


def _campaign() -> service.Campaign:
    spec = service.CampaignSpec(name="books", phone_number_id="1", rate=RATE_OF_THREE_SHARDS,
                                template={"name": "t", "language": "en_US", "components": []})
    return service.create_campaign(spec, app_settings())


def _import(campaign_id: str, phones: list[str]) -> dict:
    parsed = imports.parse_items([{"phone": f"+{p}"} for p in phones], 0)
    return service.import_recipients(campaign_id, parsed)


def _die_before_commit(campaign_id: str, phones: list[str]) -> None:
    def die(import_id, positions):
        imports.write_books(campaign_id, import_id, positions)
        raise RuntimeError("killed before the commit")

    with pytest.raises(RuntimeError):
        service.add_recipients(campaign_id, [service.RecipientRow(p) for p in dict.fromkeys(phones)], placed=die)


def _committed_phones(campaign_id: str) -> Counter:
    campaign = service.get_campaign(campaign_id)
    committed = set(campaign.imports or ())
    return Counter(rec.phone for shard in range(int(campaign.shard_count))
                   for rec in ledger.scan(campaign_id, shard) if rec.import_id in committed)


imports_of_a_campaign = st.lists(
    st.tuples(st.lists(st.sampled_from(POOL), min_size=1, max_size=8), st.booleans()), min_size=1, max_size=4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(imports_of_a_campaign)
# Always tried: the numbers of an import that died before its commit are imported again, two of
# them in one book; and one import's book beside another's of the same bucket.
@example([(POOL[:2], True), (POOL[:1], False), (POOL[:4], False)])
def test_whatever_the_imports_a_campaign_holds_each_number_once(table, steps):
    campaign = _campaign()
    assert int(campaign.shard_count) == 3
    held: set[str] = set()
    for phones, dies in steps:
        if dies:
            _die_before_commit(campaign.id, phones)
            continue
        report = _import(campaign.id, phones)
        new = set(phones) - held
        assert report["accepted"] == len(new), (phones, held, report)
        assert report["duplicates"] == len(phones) - len(new), (phones, held, report)
        held |= new
        assert report["total"] == len(held)
    stored = _committed_phones(campaign.id)
    assert set(stored) == held and all(n == 1 for n in stored.values()), stored


def test_a_book_leads_from_a_number_to_its_recipient(table):
    campaign = _campaign()
    _import(campaign.id, POOL[:6])
    _import(campaign.id, POOL[6:])
    committed = set(service.get_campaign(campaign.id).imports)
    for phone in POOL:
        (book,) = imports.books_with(campaign.id, phone)
        assert book.import_id in committed
        shard, seq = recipient_place(int(book.numbers.as_dict()[phone]), int(campaign.shard_count))
        (rec,) = [r for r in ledger.scan(campaign.id, shard, from_seq=seq) if r.seq == seq]
        assert rec.phone == phone


def test_an_import_writes_a_book_per_bucket_each_under_a_write_unit(table):
    """10 000 numbers: their recipients (a unit each), 256 books, and the import's own few writes
    (the lock and its release, the count, the commit, the shards' totals)."""
    campaign = _campaign()
    phones = [f"9197{n:08d}" for n in range(10_000)]
    with metered() as meter:
        _import(campaign.id, phones)
    books = list(NumberBook.scan(NumberBook.PK.startswith(NumberBook.bucket_pk(campaign.id, 0)[:-1])))
    assert len(books) == imports.BOOK_BUCKETS
    assert sum(len(b.numbers.as_dict()) for b in books) == len(phones)
    assert max(item_size(b.serialize()) for b in books) < 1024  # each book one write unit
    fixed_writes = 2 + 1 + 1 + int(campaign.shard_count)
    assert meter.write_units == len(phones) + imports.BOOK_BUCKETS + fixed_writes, meter.write_units
