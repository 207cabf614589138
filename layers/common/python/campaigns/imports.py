"""Recipient imports: parse a JSON list or a CSV file into validated rows, and the bookkeeping
that keeps a campaign free of duplicate numbers (number books, a per-campaign import lock) and
of suppressed ones.

Everything here runs at import time; the send path never reads a book or the suppression list
through this module.

Dedupe across imports of one campaign -- the design:
  Every import writes, for each of BOOK_BUCKETS buckets of the number's hash that its numbers
  fall in, one "number book" item `PK=CAMPAIGN#<id>#NUMBERS#<bucket>, SK=IMPORT#<import id>`: a
  map of those numbers to their recipients' indexes. An import looks its numbers up with one
  strongly consistent Query per bucket they fall in (every earlier import's book of that bucket
  at once) and writes its own books with BatchWriteItem (25 a call), before it commits.
  Why books and not an item per number: a write unit buys 1 KB, and a number with its index is
  ~20 bytes. An item per number cost one write unit a recipient, as much as the recipient itself;
  a 10 000-row import (the API's largest) fills 256 books of ~0.75 KB (12-digit numbers; longer ones
  or a fuller bucket can take a book past 1 KB, which costs it two units), 0.026 units a recipient. An
  import's own books and not books shared by all imports: a shared book grows with the campaign,
  and rewriting a 4 KB book to add one number costs 4 units. The lookups read every earlier
  import's book of a bucket, ~0.02 read units a number per earlier 10 000-row import; reads cost
  a fifth of writes. A small import writes at most one book per number (as an item per number did).
  A book counts only when its import is committed to the campaign (`Campaign.imports`): an import
  that died half-way left books of recipients that do not exist, and those numbers may be imported
  again.
  Batch writes cannot be conditional, so look-up-then-write is made safe by a lock: one import
  per campaign at a time (`ImportLock`, a conditional put with an expiry longer than the API's
  29 s limit, so a killed import frees the campaign by itself). A second concurrent import gets
  409 `import_in_progress` and may simply retry; importing the same file twice is harmless
  (its numbers come back as duplicates).
"""

from __future__ import annotations

import csv
import io
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from pynamodb.exceptions import DeleteError, PutError
from pynamodb.models import Model

from . import phones
from .config import settings
from .models import ImportLock, NumberBook, Suppression

# How many rejected rows an answer lists (all are counted in rejected_count).
MAX_LISTED_REJECTIONS = 1000
MAX_VARIABLE_CHARS = 1024
IMPORT_LOCK_SECONDS = 60
# Batch calls of one import in flight at once: 10 000 rows are ~1000 calls, ~10 s one after the other.
PARALLEL_CALLS = 8
# Buckets of the number books (see above): 10 000 numbers fill 256 books to ~0.75 KB, under one write unit.
BOOK_BUCKETS = 256


class ImportRejected(Exception):
    """The request as a whole cannot be imported; carries the HTTP status, code and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = "body"):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@dataclass
class Row:
    position: int  # JSON: 0-based index in the list; CSV: 1-based line number (the header is line 1)
    phone: str  # E.164 digits
    variables: list[str]


@dataclass
class Rejection:
    position: int
    phone: str  # as given, so the person can find the row
    reason: str
    field: str  # "phone" | "variables" | "" (the row itself)

    def as_dict(self, kind: str) -> dict:
        return {("line" if kind == "csv" else "index"): self.position, "phone": self.phone, "reason": self.reason}


@dataclass
class Parsed:
    kind: str  # "json" | "csv"
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def rejected_report(self) -> list[dict]:
        return [r.as_dict(self.kind) for r in self.rejected[:MAX_LISTED_REJECTIONS]]

    def first_rejection_field(self) -> str:
        """The field name of the first rejected row, e.g. `recipients[3].phone` (JSON) or `line 4`."""
        first = self.rejected[0]
        if self.kind == "csv":
            return f"line {first.position}"
        return f"recipients[{first.position}]" + (f".{first.field}" if first.field else "")


class _RowError(ValueError):
    def __init__(self, reason: str, field: str):
        super().__init__(reason)
        self.reason, self.field = reason, field


def check_variables(values: list, expected: int) -> list[str]:
    """The row's variables, stripped; each must be a non-empty one-line string Meta accepts."""
    if len(values) != expected:
        raise _RowError(f"expected {expected} variable{'s' if expected != 1 else ''} for the template's "
                        f"placeholders, got {len(values)}", "variables")
    cleaned = []
    for n, value in enumerate(values):
        if not isinstance(value, str):
            raise _RowError(f"variables[{n}] must be a string", "variables")
        value = value.strip()
        if not value:
            raise _RowError(f"variables[{n}] is empty", "variables")
        if "\n" in value or "\r" in value or "\t" in value or "     " in value:
            raise _RowError(f"variables[{n}] has a newline, a tab or more than 4 spaces in a row "
                            "(Meta refuses them in template parameters)", "variables")
        if len(value) > MAX_VARIABLE_CHARS:
            raise _RowError(f"variables[{n}] is longer than {MAX_VARIABLE_CHARS} characters", "variables")
        cleaned.append(value)
    return cleaned


def _row(position: int, raw_phone, variables: list, expected: int) -> Row:
    try:
        phone = phones.normalize(raw_phone)
    except phones.InvalidPhone as error:
        raise _RowError(str(error), "phone") from None
    return Row(position, phone, check_variables(variables, expected))


def _shown(raw) -> str:
    return (raw if isinstance(raw, str) else "" if raw is None else str(raw))[:64]


def parse_items(items, expected: int) -> Parsed:
    """JSON rows `{"phone": "...", "variables": [...]}`; a bad row is rejected, not the request."""
    if not isinstance(items, list):
        raise ImportRejected(422, "validation_error", "recipients must be a list", "recipients")
    if not items:
        raise ImportRejected(422, "empty", "recipients is empty", "recipients")
    max_rows = settings().max_import_rows
    if len(items) > max_rows:
        raise ImportRejected(413, "too_many_rows", f"at most {max_rows} recipients per request, got "
                             f"{len(items)}: send them as several imports", "recipients")
    parsed = Parsed("json")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            parsed.rejected.append(Rejection(index, "", "must be an object {phone, variables}", ""))
            continue
        raw_phone = item.get("phone")
        unknown = sorted(set(item) - {"phone", "variables"})
        try:
            if unknown:
                raise _RowError(f"unknown field {unknown[0]!r}", unknown[0])
            if "phone" not in item:
                raise _RowError("phone is required", "phone")
            variables = item.get("variables", [])
            if not isinstance(variables, list):
                raise _RowError("variables must be a list of strings", "variables")
            parsed.rows.append(_row(index, raw_phone, variables, expected))
        except _RowError as error:
            parsed.rejected.append(Rejection(index, _shown(raw_phone), error.reason, error.field))
    return parsed


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    try:
        for record in reader:
            yield line, record
            line = reader.line_num + 1
    except csv.Error as error:
        raise ImportRejected(422, "invalid_csv", f"line {reader.line_num}: {error}") from None


def parse_csv(data: bytes, expected: int) -> Parsed:
    """`phone,var1,var2,...` with a header line; BOM, quoted fields and CRLF are fine.

    Positions are line numbers (the header is line 1). Blank lines are skipped.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRejected(422, "invalid_csv", "the CSV is not UTF-8 text") from None
    if not text.strip():
        raise ImportRejected(422, "empty", "the CSV is empty: expected a header line phone,var1,... and rows")
    records = _records(text)
    header_line, header = next(((n, r) for n, r in records if any(c.strip() for c in r)), (0, []))
    header = [cell.strip() for cell in header]
    while header and not header[-1]:
        header.pop()
    if not header or header[0].lower() != "phone":
        raise ImportRejected(422, "invalid_csv",
                             f"line {header_line or 1} must be the header: phone,var1,var2,... (got {','.join(header)[:80]!r})")
    columns = len(header) - 1
    if columns != expected:
        raise ImportRejected(422, "invalid_csv", f"the header has {columns} variable column(s) after phone, "
                             f"the template takes {expected}")
    parsed = Parsed("csv")
    max_rows = settings().max_import_rows
    seen_rows = 0
    for line, record in records:
        if not any(cell.strip() for cell in record):
            continue
        seen_rows += 1
        if seen_rows > max_rows:
            raise ImportRejected(413, "too_many_rows",
                                 f"at most {max_rows} rows per request: send them as several imports")
        # Empty cells past the header's columns (a trailing comma) are not variables.
        while len(record) > len(header) and not record[-1].strip():
            record.pop()
        raw_phone = record[0].strip()
        try:
            parsed.rows.append(_row(line, raw_phone, record[1:], expected))
        except _RowError as error:
            parsed.rejected.append(Rejection(line, _shown(raw_phone), error.reason, error.field))
    if not parsed.rows and not parsed.rejected:
        raise ImportRejected(422, "empty", "the CSV has a header but no rows")
    return parsed


def dedupe(rows: list[Row]) -> tuple[list[Row], int]:
    """Rows with the first occurrence of each number (later ones are dropped, whatever their
    variables: one message per number); and how many repeats were dropped."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row.phone not in seen:
            seen.add(row.phone)
            unique.append(row)
    return unique, len(rows) - len(unique)


# -- batch calls, several at a time ---------------------------------------------------------------


def _chunks(items: list, size: int) -> list[list]:
    return [items[n:n + size] for n in range(0, len(items), size)]


def _in_parallel(model: type[Model], work: Callable[[list], list], chunks: list[list]) -> list:
    if not chunks:
        return []
    model._get_connection().connection.client  # noqa: B018 -- create the shared client before the threads
    with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(chunks)), thread_name_prefix="import") as pool:
        return [item for done in pool.map(work, chunks) for item in done]


def batch_get(model: type[Model], keys: list[tuple[str, str]], consistent_read: bool = False) -> list:
    """BatchGetItem in calls of 100 keys, several calls at a time."""
    return _in_parallel(model, lambda chunk: list(model.batch_get(chunk, consistent_read=consistent_read)),
                        _chunks(keys, 100))


def batch_save(items: list[Model]) -> None:
    """BatchWriteItem (puts) in calls of 25 items, several calls at a time; unprocessed items retried."""
    if not items:
        return
    model = type(items[0])

    def save(chunk: list[Model]) -> list:
        with model.batch_write() as batch:
            for item in chunk:
                batch.save(item)
        return []

    _in_parallel(model, save, _chunks(items, 250))


# -- suppression list -----------------------------------------------------------------------------


def suppressed(numbers: Iterable[str]) -> set[str]:
    """Which of these numbers are on the suppression list."""
    return {item.phone for item in batch_get(Suppression, [Suppression.key(n) for n in set(numbers)])}


# -- number books ---------------------------------------------------------------------------------


def bucket_of(phone: str) -> int:
    """The number's book bucket: a hash that every process computes alike (Python's hash() does not)."""
    return zlib.crc32(phone.encode()) % BOOK_BUCKETS


def books_with(campaign_id: str, phone: str) -> list[NumberBook]:
    """Every import's book (committed or not) that holds the number."""
    return [book for book in _books(campaign_id, bucket_of(phone)) if phone in book.numbers.as_dict()]


def _books(campaign_id: str, bucket: int) -> list[NumberBook]:
    return list(NumberBook.query(NumberBook.bucket_pk(campaign_id, bucket), consistent_read=True))


def imported(campaign_id: str, numbers: Iterable[str], committed_imports: set[str]) -> set[str]:
    """Which of these numbers a committed import of the campaign already holds."""
    wanted = set(numbers)
    buckets = sorted({bucket_of(n) for n in wanted})

    def look(chunk: list[int]) -> list[str]:
        (bucket,) = chunk
        held = [book.numbers.as_dict() for book in _books(campaign_id, bucket) if book.import_id in committed_imports]
        return [phone for numbers in held for phone in numbers if phone in wanted]

    return set(_in_parallel(NumberBook, look, _chunks(buckets, 1)))  # a Query per bucket, several at a time


def write_books(campaign_id: str, import_id: str, placed: Iterable[tuple[str, int]]) -> None:
    """The books of one import's (phone, recipient index) pairs, written before that import commits."""
    buckets: dict[int, dict[str, int]] = {}
    for phone, index in placed:
        buckets.setdefault(bucket_of(phone), {})[phone] = index
    batch_save([NumberBook(*NumberBook.key(campaign_id, bucket, import_id), numbers=numbers)
                for bucket, numbers in buckets.items()])


# -- one import per campaign at a time ------------------------------------------------------------


class ImportBusy(Exception):
    """Another import of the same campaign holds the lock."""


@contextmanager
def import_lock(campaign_id: str, seconds: float = IMPORT_LOCK_SECONDS) -> Iterator[None]:
    now = time.time()
    lock = ImportLock(*ImportLock.key(campaign_id), owner=uuid.uuid4().hex, expires=now + seconds,
                      expires_at=int(now + seconds) + 3600)
    try:
        lock.save(condition=ImportLock.PK.does_not_exist() | (ImportLock.expires < now))
    except PutError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise ImportBusy(campaign_id) from None
        raise
    try:
        yield
    finally:
        try:
            lock.delete(condition=ImportLock.owner == lock.owner)
        except DeleteError as error:  # expired and taken by another import meanwhile: theirs now
            if error.cause_response_code != "ConditionalCheckFailedException":
                raise
