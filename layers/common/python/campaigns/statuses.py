"""Status webhooks: what Meta tells us happened to a message after we sent it.

Every status is applied with conditional writes on the one recipient item, so a replay (Meta
retries for days), a duplicate, or statuses out of order (read before delivered) all end in the
same state, and concurrent webhooks never lose each other's updates (no read-modify-write):

  sent / delivered / read
    in_doubt  → sent (proof that the send happened); shard counters in_doubt -1, sent +1 and
                webhook_moves +1 (the sender's recount sees a webhook raced it and retries);
    sent      → a `sent` is read first (one strongly consistent read, a fifth of a write's price):
                after the sender's checkpoint it tells nothing new (the wamid is recorded, the
                recipient sent) and costs no write at all;
    sending   → status unchanged (the sender's checkpoint or a takeover settles it; a takeover
                that finds the wamid we record marks it sent, see ledger.settle_orphan);
    any       → wamid, delivered_at, read_at recorded only where absent. `read` implies
                delivered. Shard.delivered / Shard.read are ADDed only by the write that found
                the timestamp absent (UpdateItem ReturnValues=ALL_OLD), so a replay counts once.
  failed
    sent / in_doubt → failed (counters: old status -1, failed +1, webhook_moves +1), even after
                delivered (one message can be delivered to one device and fail on another);
    any       → error_code, error_message, failed_at recorded; 131050 (the person stopped
                marketing messages) puts the number on the suppression list (campaigns.suppressions:
                its pending recipients in every campaign not finished are skipped).

The delivered and read counters a webhook body earns are summed by shard and written once per shard
after its statuses (`DeliveryCounts`): one write for many statuses when Meta batches them, exact as a
write per status is (both land before the 200 that stops Meta's retries). Counter moves between
statuses (in doubt -> sent, sent -> failed) are written at once, beside the recipient's write, since
the sender's recount races them through `webhook_moves`.

A status without our callback data, or naming no recipient we have, is ignored and counted; so is
the status of a test send (callback data `test:...`, campaigns.test_sends), which changes nothing:
no recipient, no counter, no proof, not the suppression list (a 131050 in it included).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from enum import StrEnum

from pynamodb.exceptions import DoesNotExist

from . import proof, suppressions
from .graph_errors import ErrorClass, classify
from .ledger import LAST_SEQ
from .models import (
    Campaign,
    Recipient,
    Shard,
    is_test_send_callback,
    parse_callback_key,
    recipient_sk,
    shard_pk,
    write_if,
    write_if_returning_old,
)
from .observability import Metric, count, logger, mask_phone
from .states import RecipientStatus as R


class Outcome(StrEnum):
    RESOLVED = "resolved"  # an in-doubt recipient proven sent
    FAILED = "failed"  # a sent / in-doubt recipient moved to failed
    RECORDED = "recorded"  # timestamps, wamid or error recorded; status unchanged
    UNCHANGED = "unchanged"  # already known (a replay)
    UNKNOWN = "unknown"  # no callback data, or no such recipient
    IGNORED = "ignored"  # not a status we handle, or malformed
    TEST_SEND = "test_send"  # the status of a test send (campaigns.test_sends): nothing to change


# -- signature -----------------------------------------------------------------------------------


class SignatureError(Exception):
    def __init__(self, missing: bool):
        super().__init__("signature missing" if missing else "signature does not match")
        self.missing = missing


def verify_signature(raw_body: bytes, header: str | None, app_secret: str) -> None:
    """X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(raw body, app secret), compared in constant time."""
    if not header:
        raise SignatureError(missing=True)
    expected = "sha256=" + hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise SignatureError(missing=False)


# -- applying statuses -----------------------------------------------------------------------------


def statuses_of(payload: object) -> list[tuple[object, str]]:
    """(status, the sending number's id) for each of entry[].changes[].value.statuses[] of a webhook
    body (anything else in it is not ours)."""
    found: list = []
    if not isinstance(payload, dict):
        return found
    for entry in payload.get("entry") or []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if isinstance(value, dict) and isinstance(value.get("statuses"), list):
                metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
                number = str(metadata.get("phone_number_id") or "")[:32]
                found += [(status, number) for status in value["statuses"]]
    return found


class DeliveryCounts:
    """The delivered / read counters the statuses of one webhook body earned, by shard, written
    once per shard by `flush`."""

    def __init__(self):
        self.by_shard: dict[tuple[str, int], Counter] = {}

    def add(self, target: tuple[str, int, int], deltas: dict) -> None:
        self.by_shard.setdefault(target[:2], Counter()).update(deltas)

    def flush(self) -> None:
        for (campaign_id, shard), deltas in self.by_shard.items():
            _count((campaign_id, shard, 0), deltas)
        self.by_shard.clear()


def apply_all(payload: object) -> Counter:
    outcomes: Counter = Counter()
    counts = DeliveryCounts()
    for status, number in statuses_of(payload):
        outcomes[apply(status, number, counts).value] += 1
    counts.flush()
    return outcomes


def apply(status: object, phone_number_id: str = "", counts: DeliveryCounts | None = None) -> Outcome:
    """One status; `phone_number_id` (the webhook's metadata) is the number whose proof it raises.
    `counts`: where its delivered / read counters go (written at once without)."""
    own = counts is None
    counts = DeliveryCounts() if own else counts
    outcome = _apply(status, phone_number_id, counts)
    if own:
        counts.flush()
    return outcome


def _apply(status: object, phone_number_id: str, counts: DeliveryCounts) -> Outcome:
    if not isinstance(status, dict):
        return Outcome.IGNORED
    kind = status.get("status")
    if kind not in ("sent", "delivered", "read", "failed"):
        return Outcome.IGNORED
    if is_test_send_callback(status.get("biz_opaque_callback_data")):
        logger.info("status of a test send", extra={"status": kind,
                                                     "recipient": mask_phone(str(status.get("recipient_id", "")))})
        return Outcome.TEST_SEND
    target = _recipient_of(status.get("biz_opaque_callback_data"))
    if target is None:
        logger.info("status without a recipient of ours",
                    extra={"status": kind, "recipient": mask_phone(str(status.get("recipient_id", "")))})
        return Outcome.UNKNOWN
    wamid = status.get("id") if isinstance(status.get("id"), str) and 0 < len(status["id"]) <= 256 else None
    at = _timestamp(status.get("timestamp"))
    if kind == "failed":
        outcome, old = _failed(target, status, wamid, at)
    elif kind == "sent" and (known := _nothing_new(target, wamid)) is not None:
        outcome, old = Outcome.UNCHANGED, known  # the sender's checkpoint recorded it: no write
    else:
        outcome, old = _proof(target, kind, wamid, at, counts)
    if old is not None:
        _reported_on(target, old, wamid, phone_number_id, kind)
    return outcome


def _reported_on(target: tuple[str, int, int], old: dict, wamid: str | None, number: str, kind: str) -> None:
    """Meta reported on a send of this recipient: the number's proof rises to its claim
    (campaigns.proof), and a recipient sent again after proof of absence whose status names
    another message than the one recorded was sent twice after all (the residual risk)."""
    claimed_at = _n(old, "claimed_at")
    if claimed_at:
        proof.record_proven_claim(_sending_number(target[0], number), claimed_at, time.time())
    recorded = _s(old, "wamid")
    if "absent_proven_at" not in old or not wamid or not recorded or wamid == recorded:
        return
    if _update(target, [Recipient.duplicate_at.set(time.time())], Recipient.duplicate_at.does_not_exist()):
        _count(target, {"duplicates": 1})
        count(Metric.DUPLICATE_SENDS)
        logger.warning("an in-doubt send resent after proof of absence had reached Meta: sent twice",
                       extra=_where(target, kind))


def _recipient_of(callback: object) -> tuple[str, int, int] | None:
    parsed = parse_callback_key(callback) if isinstance(callback, str) and len(callback) <= 512 else None
    if parsed is None:
        return None
    campaign_id, shard, seq = parsed
    if not campaign_id or "#" in campaign_id or not 0 <= shard < 10_000 or not 0 <= seq <= LAST_SEQ:
        return None
    return parsed


def _timestamp(value: object) -> float:
    try:
        at = float(value)  # epoch seconds, as a string
    except (TypeError, ValueError):
        return time.time()
    return at if 0 < at < 1e11 else time.time()


def _update(target: tuple[str, int, int], actions: list, condition) -> dict | None:
    """The recipient's attributes before the write, or None if the condition failed."""
    campaign_id, shard, seq = target
    return write_if_returning_old(Recipient, shard_pk(campaign_id, shard), recipient_sk(seq), actions, condition)


_campaign_numbers: dict[str, str] = {}  # campaign id -> its number, fixed at its creation


def _campaign_number(campaign_id: str) -> str:
    """The number a campaign sends from, read once per process (a campaign not found is not kept)."""
    if campaign_id not in _campaign_numbers:
        try:
            _campaign_numbers[campaign_id] = str(Campaign.get(*Campaign.key(campaign_id)).phone_number_id)
        except DoesNotExist:
            return ""
    return _campaign_numbers[campaign_id]


def _sending_number(campaign_id: str, from_metadata: str) -> str:
    """The number whose proof a status raises: the campaign's own (the one its batches read), as
    the webhook's metadata names it when it does, else read from the campaign."""
    return from_metadata or _campaign_number(campaign_id)


def _s(old: dict, name: str) -> str | None:
    value = old.get(name)
    return value.get("S") if isinstance(value, dict) else None


def _n(old: dict, name: str) -> float | None:
    value = old.get(name)
    try:
        return float(value["N"]) if isinstance(value, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


# What a `sent` status is compared with, and what the proof of its number needs (_reported_on).
SENT_READ = ["status", "wamid", "claimed_at", "absent_proven_at"]


def _nothing_new(target: tuple[str, int, int], wamid: str | None) -> dict | None:
    """The recipient as a strongly consistent read finds it, if a `sent` for it would change
    nothing (its wamid recorded, not in doubt); None if the status must be written."""
    campaign_id, shard, seq = target
    answer = Recipient._get_connection().get_item(
        shard_pk(campaign_id, shard), range_key=recipient_sk(seq), consistent_read=True,
        attributes_to_get=SENT_READ)
    item = answer.get("Item")
    if not item or _s(item, "status") == R.IN_DOUBT.value or ("wamid" not in item and wamid):
        return None
    return item


def _proof(target: tuple[str, int, int], kind: str, wamid: str | None, at: float,
           counts: DeliveryCounts) -> tuple[Outcome, dict | None]:
    """sent / delivered / read: the message reached Meta (and maybe the phone).

    First record what is new (one write, whatever the status: the common case of a `sent`
    recipient costs nothing more); then, if that write found the recipient in doubt, resolve it.
    """
    stamps = []
    if wamid:
        stamps.append(Recipient.wamid.set(Recipient.wamid | wamid))
    if kind in ("delivered", "read"):
        stamps.append(Recipient.delivered_at.set(Recipient.delivered_at | at))
    if kind == "read":
        stamps.append(Recipient.read_at.set(Recipient.read_at | at))
    if not stamps:  # a `sent` without a wamid: record when, where absent (the write also reads the status)
        stamps.append(Recipient.sent_at.set(Recipient.sent_at | at))
    old = _update(target, stamps, Recipient.PK.exists())
    if old is None:
        return Outcome.UNKNOWN, None
    deltas = _newly(old, kind)
    changed = bool(deltas) or bool(wamid and "wamid" not in old)
    resolved = False
    if _s(old, "status") == R.IN_DOUBT.value:
        resolved = _update(
            target,
            [Recipient.status.set(R.SENT.value), Recipient.sent_at.set(Recipient.sent_at | at),
             Recipient.proven_at.set(time.time())],
            Recipient.status == R.IN_DOUBT.value,
        ) is not None
        if resolved:
            # A move between statuses: written now, with the delivery counters it earned.
            _count(target, {**deltas, "in_doubt": -1, "sent": 1, "in_doubt_proven": 1, "webhook_moves": 1})
    if deltas and not resolved:
        counts.add(target, deltas)
    if resolved:
        count(Metric.IN_DOUBT_RESOLVED)
        logger.info("in-doubt send proven by a webhook", extra=_where(target, kind))
        return Outcome.RESOLVED, old
    return (Outcome.RECORDED if changed else Outcome.UNCHANGED), old


def _newly(old: dict, kind: str) -> dict:
    """The delivery counters this write earned: only a timestamp it found absent counts."""
    deltas = {}
    if kind in ("delivered", "read") and "delivered_at" not in old:
        deltas["delivered"] = 1
    if kind == "read" and "read_at" not in old:
        deltas["read"] = 1
    return deltas


def _failed(target: tuple[str, int, int], status: dict, wamid: str | None, at: float) -> tuple[Outcome, dict | None]:
    errors = status.get("errors") if isinstance(status.get("errors"), list) else []
    error = errors[0] if errors and isinstance(errors[0], dict) else {}
    try:
        code = int(error.get("code"))
    except (TypeError, ValueError):
        code = 0
    details = error.get("error_data", {}).get("details") if isinstance(error.get("error_data"), dict) else None
    message = str(details or error.get("message") or error.get("title") or "failed (status webhook)")[:500]
    recorded = [
        Recipient.error_code.set(code),
        Recipient.error_message.set(message),
        Recipient.failed_at.set(Recipient.failed_at | at),
    ]
    if wamid:
        recorded.append(Recipient.wamid.set(Recipient.wamid | wamid))
    outcome = Outcome.RECORDED
    for _ in range(3):
        old = _update(target, [Recipient.status.set(R.FAILED.value), *recorded],
                      Recipient.status.is_in(R.SENT.value, R.IN_DOUBT.value))
        if old is not None:
            _count(target, {_s(old, "status"): -1, "failed": 1, "webhook_moves": 1})
            outcome = Outcome.FAILED
            break
        old = _update(target, recorded, Recipient.PK.exists())
        if old is None:
            return Outcome.UNKNOWN, None
        if _s(old, "status") not in (R.SENT.value, R.IN_DOUBT.value):
            outcome = Outcome.RECORDED if "failed_at" not in old else Outcome.UNCHANGED
            break
    if classify(code) == ErrorClass.SUPPRESS:
        phone = _s(old, "phone") or ""
        if phone:
            suppressions.suppress(phone, suppressions.graph_reason(code), suppressions.SOURCE_GRAPH, at)
    return outcome, old


def _count(target: tuple[str, int, int], deltas: dict) -> None:
    campaign_id, shard, _ = target
    actions = [getattr(Shard, name).add(value) for name, value in deltas.items() if value]
    # A recipient without its shard item (the condition fails): nothing to count on.
    write_if(Shard(*Shard.key(campaign_id, shard)), actions, Shard.campaign_id.exists())


def _where(target: tuple[str, int, int], kind: str) -> dict:
    return {"campaign_id": target[0], "shard": target[1], "seq": target[2], "status": kind}
