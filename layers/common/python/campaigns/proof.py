"""Proof of absence: when the status webhooks show that an in-doubt send never reached Meta.

A recipient is in doubt when its batch died (or timed out) with its POST possibly on the wire. A
status webhook for it proves it sent (campaigns/statuses.py). The opposite proof comes from the
number's other sends: Meta posts a status for every message it accepts, `sent` first, within
seconds, and retries a webhook it could not deliver. A recipient is claimed right before its POST
(campaigns/sending.py), so a send of the same number claimed after it left after it. Once the
webhooks have reported on such a later send, and `quiet` seconds have passed since the recipient
went in doubt with no status of its own, its POST did not arrive: under policy auto it goes back to
pending and is sent once (campaigns/progress.py, `InDoubtRule`).

What the webhooks have proven is kept per number as a watermark: the latest claim time of a send
Meta reported on (`models.NumberProof`). Each webhook process raises it at most once per
`WATERMARK_STEP_SECONDS` of claim time: four conditional writes a second per number at most, not
one per status (0.05 a message at 80 mps). While webhooks are silent the watermark stands still,
and nothing is resent however long the recipient waits. A recipient claimed within the step
before the last claim reported on can wait for a later send's report (the next campaign's, or
none: it then stays in doubt).

The residual risk, and how it is caught: statuses arrive out of order, and a webhook Meta failed to
deliver (our endpoint down for that request) comes back later. If the in-doubt send's own status
arrives more than `quiet` seconds late while a later send's came in time, the recipient has been
sent twice; that late status (a wamid other than
the one the resend recorded) marks the recipient `duplicate_at`, counts in the campaign's
`duplicates` and is logged (campaigns/statuses.py).
"""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist

from .config import settings
from .models import NumberProof, write_if

WATERMARK_STEP_SECONDS = 0.25

# The claim time this process last raised (or found) each number's watermark to, by table and
# number: a status for a send claimed within a step of it changes nothing worth a write.
_raised_to: dict[tuple[str, str], float] = {}


def record_proven_claim(phone_number_id: str, claimed_at: float, now: float) -> None:
    """A status webhook reported on a send of this number claimed at `claimed_at`."""
    known = (settings().table_name, phone_number_id)
    if not phone_number_id or claimed_at < _raised_to.get(known, 0.0) + WATERMARK_STEP_SECONDS:
        return
    write_if(NumberProof(*NumberProof.key(phone_number_id)),
             [NumberProof.proven_claimed_at.set(claimed_at), NumberProof.updated_at.set(now)],
             NumberProof.proven_claimed_at.does_not_exist() | (NumberProof.proven_claimed_at < claimed_at))
    _raised_to[known] = claimed_at  # raised by us or already higher: at least this now


def latest_proven_claim(phone_number_id: str) -> float:
    """The number's watermark (0 if no webhook ever reported on one of its sends)."""
    try:
        item = NumberProof.get(*NumberProof.key(phone_number_id), consistent_read=True)
    except DoesNotExist:
        return 0.0
    return float(item.proven_claimed_at or 0.0)


def absence_proven(claimed_at: float, in_doubt_at: float, latest_proven: float, now: float, quiet: float) -> bool:
    """Webhooks reported on a send claimed after this one, and its own status had `quiet` seconds
    to come since it went in doubt: it never reached Meta."""
    return latest_proven > claimed_at and now >= in_doubt_at + quiet


def forget() -> None:
    """The process's record of the watermarks it raised (a test's fresh table starts at zero)."""
    _raised_to.clear()
