"""Clones: a new draft campaign made from another (`POST /campaigns/{id}/clone`), with the same template
and settings and, optionally, the source's recipients picked by what became of them.

What is copied: the number, the template, `rate`, `in_doubt_policy`, `send_window` and `api`; `expires_at`
only while it is still in the future (a clone of an expired campaign gets none: an expiry in the past
would expire it at once). Not copied: `send_at` (a clone is a draft; schedule it yourself), the status,
the counts and everything of the sends.

Which recipients (`recipients`), each with its variables, in the source's import order:

| pick | the source's recipients whose |
|---|---|
| `none` (default) | (none) |
| `all` | every one, whatever its status |
| `failed` | status is `failed` (refused by Meta, or a `failed` status webhook after it was sent) |
| `not_delivered` | no `delivered_at`: pending, failed, in doubt, expired, and sent but never reported delivered |
| `not_read` | no `read_at`: the `not_delivered` ones, and those delivered but never reported read |

`not_delivered` and `not_read` leave out the recipients `skipped` (they opted out) and those `sending`
(claimed by a batch of the source right now: its send may be on the wire). A person who reads with read
receipts off never has `read_at`: `not_read` picks them too.

They go into the clone through the import (service.import_recipients), so duplicates and the
suppression list are dealt with as in any import (numbers on the list now are dropped and counted),
in imports of at most IMPORT_CHUNK rows. The source is read shard by shard, a page of 1 000 at a time
(ledger.SCAN_PAGE, consistent reads), and nothing is written before it has all been read: a refused
clone (an unknown source, a bad body, more than MAX_CLONE_ROWS picked, a source too big to read within
READ_SECONDS) writes nothing. A clone that dies during its import is left a draft with the imports it
committed (cancel it and clone again).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from enum import StrEnum

from . import imports, ledger, service
from .config import Settings
from .errors import TooManyRows
from .models import Campaign, Recipient, shard_pk
from .observability import logger
from .states import RecipientStatus as R
from .views import committed_total, get_campaign

# Picked recipients one clone takes: one import's worth, which fits in API Gateway's 29 s (measured:
# docs/api.md, "clone"); more is 413 too_many_rows, and nothing is written.
MAX_CLONE_ROWS = 10_000
# Rows per import of the clone (an import's own limit): a clone of MAX_CLONE_ROWS is one import.
IMPORT_CHUNK = 10_000
# How long the read of the source may take, so that the import after it still ends inside the 29 s;
# a source too big to read in it is refused (413, nothing written) rather than cloned half-way.
READ_SECONDS = 12.0


class Pick(StrEnum):
    NONE = "none"
    ALL = "all"
    FAILED = "failed"
    NOT_DELIVERED = "not_delivered"
    NOT_READ = "not_read"


# Never picked by not_delivered / not_read: opted out, or in flight in the source right now.
_NOT_RESENT = frozenset({R.SKIPPED.value, R.SENDING.value})


def picked(rec: Recipient, pick: Pick) -> bool:
    """Whether the recipient goes into a clone of its campaign made with `pick` (the table above)."""
    if pick == Pick.ALL:
        return True
    if pick == Pick.FAILED:
        return rec.status == R.FAILED.value
    if pick == Pick.NOT_DELIVERED:
        return rec.status not in _NOT_RESENT and rec.delivered_at is None and rec.read_at is None
    if pick == Pick.NOT_READ:
        return rec.status not in _NOT_RESENT and rec.read_at is None
    return False


def picked_rows(source: Campaign, pick: Pick) -> list[imports.Row]:
    """The source's recipients `pick` takes, in the order they were imported (TooManyRows past the limit:
    the read stops there)."""
    if pick == Pick.NONE:
        return []
    found: list[tuple[int, int, str, list[str]]] = []
    deadline = time.monotonic() + READ_SECONDS
    for read, rec in enumerate(_recipients(source), start=1):
        if read % ledger.SCAN_PAGE == 0 and time.monotonic() > deadline:
            raise TooManyRows(f"the source has too many recipients to be read and cloned in one request ({read} "
                              f"read in {READ_SECONDS:g} s): clone with recipients none and import them in parts",
                              field="recipients")
        if picked(rec, pick):
            found.append((rec.seq, rec.shard, rec.phone, list(rec.variables or [])))
            if len(found) > MAX_CLONE_ROWS:
                raise TooManyRows(f"more than {MAX_CLONE_ROWS} recipients picked; a clone takes at most "
                                  f"{MAX_CLONE_ROWS}: clone with recipients none and import them in parts",
                                  field="recipients")
    found.sort()  # the import order: recipient n is at shard n % shards, seq n // shards
    return [imports.Row(n, phone, variables) for n, (_, _, phone, variables) in enumerate(found)]


# What a pick reads of each recipient (the rest of the item stays in the store).
_READ = ["PK", "SK", "phone", "variables", "status", "delivered_at", "read_at", "import_id"]


def _recipients(source: Campaign) -> Iterator[Recipient]:
    """The source's recipients, shard by shard, a page of ledger.SCAN_PAGE at a time, read consistently."""
    committed = set(source.imports or ())
    for shard in range(int(source.shard_count)):
        for rec in Recipient.query(shard_pk(source.id, shard), Recipient.SK.startswith("R#"), consistent_read=True,
                                   attributes_to_get=_READ, page_size=ledger.SCAN_PAGE):
            if rec.import_id in committed:  # an import that never committed has no recipients
                yield rec


def spec_of(source: Campaign, name: str, now: float | None = None) -> service.CampaignSpec:
    """The clone's settings: the source's, without its send_at, and its expiry only if still ahead."""
    now = time.time() if now is None else now
    expires_at = float(source.expires_at) if source.expires_at and float(source.expires_at) > now else None
    return service.CampaignSpec(
        name=name,
        phone_number_id=source.phone_number_id,
        template=source.template,
        rate=int(source.rate),
        in_doubt_policy=source.in_doubt_policy,
        send_window=source.send_window,
        expires_at=expires_at,
        api=source.api or "messages",
    )


def clone(source_id: str, name: str | None, pick: Pick | str, settings: Settings) -> tuple[str, dict | None]:
    """A new draft from `source_id`; its id, and the import report of its recipients (None for `none`)."""
    pick = Pick(pick)
    source = get_campaign(source_id)
    rows = picked_rows(source, pick)
    spec = spec_of(source, name or f"{source.name} (copy)"[:200])
    campaign = service.create_campaign(spec, settings)
    report = None if pick == Pick.NONE else _import(campaign, rows)
    logger.info("campaign cloned", extra={"campaign_id": campaign.id, "source": source_id, "pick": pick.value,
                                          "picked": len(rows), "accepted": (report or {}).get("accepted", 0)})
    return campaign.id, report


def _import(campaign: Campaign, rows: list[imports.Row]) -> dict:
    """The picked rows through the import, in chunks; one report summed over them."""
    report = {"accepted": 0, "rejected": [], "rejected_count": 0, "duplicates": 0, "suppressed": 0}
    for start in range(0, len(rows), IMPORT_CHUNK):
        done = service.import_recipients(campaign.id, imports.Parsed("json", rows=rows[start:start + IMPORT_CHUNK]))
        for name in ("accepted", "duplicates", "suppressed"):
            report[name] += done[name]
    return {**report, "total": committed_total(get_campaign(campaign.id))}
