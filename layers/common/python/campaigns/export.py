"""A campaign's recipients as CSV (`GET /campaigns/{id}/recipients.csv`), in pages that each fit the
response limits, with the cursor of the next page.

One row per recipient, the columns of `COLUMNS`, RFC 4180 (Python's csv module: CRLF line ends, a
field with a comma, a quote or a line break quoted, quotes doubled), the moments ISO 8601 UTC
(`timestamps.iso_utc`), the phone as the JSON listing shows it (E.164 digits, no `+`).

**Why pages.** A deployed answer passes two limits: Lambda's 6 MB for a synchronous invocation's
response (the proxy response as JSON, so the CSV counts as a JSON string, escapes and all) and API
Gateway's 10 MB and 29 s for a REST integration. A row is 30-150 bytes (~100 in a sent campaign; a
failed one with a long Graph message up to ~3 KB escaped), so 100 000 recipients are ~10 MB: over
Lambda's limit, at API Gateway's (bench.export; the arithmetic in docs/api.md, "Export"). Each answer is
therefore a complete CSV (the header, then at most `limit` rows and at most MAX_PAGE_BYTES of them as
Lambda writes them) and, when there is more, the opaque cursor of the next page; a campaign of at most
`limit` recipients (10 000 by default) is one answer, unless its rows pass MAX_PAGE_BYTES. A page also reads at most MAX_READ_PAGES pages
of the store (DynamoDB's are <= 1 MB each), so a sparse status filter over a big shard answers a short
page, even an empty one, with a cursor rather than reading the whole partition within one request.

**The cursor** is the position after the last recipient the page read, `[shard, key]` (the
views.page_token form, as the JSON listing's `next`): a page that stops inside a DynamoDB page (its
row or byte budget) names the last recipient it read, so the next page starts at the one after it.

**Spreadsheet formulas.** `error_message` is the one column of text from outside (Graph's messages, a
person's reason for a suppression): a value that begins with `=`, `+`, `-`, `@`, a tab or a carriage
return is written with a `'` before it, so that a spreadsheet shows it as text instead of evaluating
it (OWASP's CSV injection advice). The other columns cannot begin so: digits, a status name, an
integer code, ISO moments.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from decimal import Decimal

from .errors import Unprocessable
from .models import Recipient, shard_pk
from .states import RecipientStatus
from .timestamps import iso_utc
from .views import get_campaign, page_token, read_page_token

COLUMNS = ("phone", "status", "error_code", "error_message", "sent_at", "delivered_at", "read_at")
# Rows of one page at most (and the default): about 1.2 MB of typical rows, read in well under the 29 s.
MAX_ROWS = 10_000
# A page's CSV as Lambda returns it (escaped as a JSON string) stays under this: Lambda's limit is 6 MB.
MAX_PAGE_BYTES = 4 * 1024 * 1024
# DynamoDB pages (<= 1 MB each) one page of the export reads at most.
MAX_READ_PAGES = 8
# A cell a spreadsheet would read as a formula (or as a line it splits) begins with one of these.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MEDIA_TYPE = "text/csv; charset=utf-8; header=present"

_TIMES = ("sent_at", "delivered_at", "read_at")
# Only what the rows need (a recipient's variables can be kilobytes): the key for the cursor, the
# import for leaving out recipients of an import that never committed, and the columns.
_READ = ["PK", "SK", "import_id", "phone", "status", "error_code", "error_message", *_TIMES]
_ESCAPE = json.encoder.encode_basestring_ascii  # how Lambda's runtime writes the body into its answer


@dataclass(frozen=True)
class Page:
    body: str  # the header line, then one line per recipient
    rows: int
    next: str | None  # the cursor of the next page; None on the last


def page(campaign_id: str, status: RecipientStatus | str | None = None, limit: int = MAX_ROWS,
         cursor: str | None = None, max_bytes: int = MAX_PAGE_BYTES) -> Page:
    """One page of the export, shard by shard in send order (NotFound for an unknown campaign,
    Unprocessable naming `next` for a cursor that is not one of this campaign's)."""
    campaign = get_campaign(campaign_id)
    shards = int(campaign.shard_count)
    committed = set(campaign.imports or ())
    shard, key = _position(read_page_token(cursor), campaign_id, shards)
    line = _LineWriter()
    lines = [line(COLUMNS)]
    size, rows, read = _escaped_size(lines[0]), 0, 0
    while shard < shards:
        if read >= MAX_READ_PAGES:
            return Page("".join(lines), rows, page_token([shard, key]))
        # One more than the rows still wanted: a page that ends right at the shard's end knows it did.
        pages = Recipient.query(
            shard_pk(campaign_id, shard),
            Recipient.SK.startswith("R#"),
            filter_condition=(Recipient.status == str(status)) if status else None,
            attributes_to_get=_READ,
            page_size=limit - rows + 1,
            last_evaluated_key=key,
        ).page_iter
        found = next(pages)
        read += 1
        for raw in found.get("Items", []):
            if raw.get("import_id", {}).get("S") in committed:
                text = line(_row(raw))
                grown = _escaped_size(text)
                if rows >= limit or (rows and size + grown > max_bytes):
                    return Page("".join(lines), rows, page_token([shard, key]))
                lines.append(text)
                size += grown
                rows += 1
            key = {"PK": raw["PK"], "SK": raw["SK"]}
        key = pages.last_evaluated_key
        if key is None:
            shard += 1
    return Page("".join(lines), rows, None)


def _position(position: object, campaign_id: str, shards: int) -> tuple[int, dict | None]:
    """Where a cursor points: (shard, exclusive start key or None); (0, None) without one."""
    if position is None:
        return 0, None
    if not (isinstance(position, list) and len(position) == 2 and type(position[0]) is int
            and 0 <= position[0] < shards):
        raise Unprocessable("next is not a cursor of this export", field="next")
    shard, key = position
    if key is not None and not (
        isinstance(key, dict) and set(key) == {"PK", "SK"}
        and all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values())
        and key["PK"]["S"] == shard_pk(campaign_id, shard) and key["SK"]["S"].startswith("R#")
    ):
        raise Unprocessable("next is not a cursor of this export", field="next")
    return shard, key


def _row(raw: dict) -> list[str]:
    code = raw.get("error_code", {}).get("N")
    return [
        raw["phone"]["S"],
        raw.get("status", {}).get("S", RecipientStatus.PENDING.value),
        str(int(Decimal(code))) if code is not None else "",
        text_cell(raw.get("error_message", {}).get("S")),
        *(iso_utc(Decimal(raw[name]["N"])) if name in raw else "" for name in _TIMES),
    ]


def text_cell(value: str | None) -> str:
    """Free text as a cell no spreadsheet evaluates: `'` before a formula's first character."""
    if not value:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


class _LineWriter:
    """One CSV line at a time (the excel dialect: RFC 4180's quoting, CRLF), each measured on its own."""

    def __init__(self):
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def __call__(self, cells) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(cells)
        return self._buffer.getvalue()


def _escaped_size(line: str) -> int:
    """The line's bytes in Lambda's answer: a JSON string, non-ASCII as \\u escapes (its worst case)."""
    return len(_ESCAPE(line)) - 2
