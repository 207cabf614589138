"""The one form of a moment in the API's answers: ISO 8601 in UTC, to the millisecond
(`2026-11-28T18:54:13.556+00:00`).

The store keeps most moments as epoch seconds (numbers compare and index cheaply: the due index,
conditions such as `in_doubt_at <= ...`) and the campaign's `created_at` as this very string (the
listing index sorts by it); every answer passes each of them through `iso_utc`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal


def iso_utc(moment: float | int | Decimal | str | None) -> str | None:
    """Epoch seconds, or an ISO 8601 string (one without a zone is taken as UTC), as ISO 8601 UTC."""
    if moment is None:
        return None
    if isinstance(moment, str):
        parsed = datetime.fromisoformat(moment)
        at = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    else:
        at = datetime.fromtimestamp(float(moment), UTC)
    return at.isoformat(timespec="milliseconds")


def now_iso() -> str:
    return iso_utc(time.time())
