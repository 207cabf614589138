"""The suppression list: numbers that asked for no more marketing messages, and the campaigns that
still owed them one.

A number goes on the list (one item, `models.Suppression`, with its `source`):
  reply         an opt-out reply: an inbound message of the `messages` webhook whose text, quick-reply
                button (payload or text) or interactive button reply (id or title) is an opt-out keyword,
                STOP, UNSUBSCRIBE or one of OPT_OUT_KEYWORDS, case and spaces ignored ("stop it" and
                "STOPPED" are not);
  graph_131050  Graph error 131050 (the person stopped marketing messages), at send time or in a
                `failed` status webhook;
  person        PUT /suppressions/{phone}.

`suppress` is the one rule for all three: it writes the item if the number is not on the list yet
(a second STOP changes nothing of it), then skips the number's pending recipients in every campaign
not finished (draft, scheduled, sending, paused), whatever the source: a 131050 met in one campaign
means the person stopped marketing messages from us, not from that campaign alone. Each skip is ONE
conditional write on the recipient, `pending -> skipped` with `error_message` naming the reason: a
recipient a batch has claimed already (`sending`: its POST may be on the wire) is left to its send, and
a batch that comes to a skipped recipient later loses its claim (conditioned on `pending`) and sends
nothing. The shard's `skipped` counter and `webhook_moves` are bumped as `statuses` does for its moves
(a recount racing the skip counts again). The walk is repeated in full by every call: a replayed
webhook, or a retry after a crash between the item and the walk, skips what is left and nothing twice.

Imports drop the numbers on the list (imports.suppressed); the send path never reads it (that would
cost a read per message). Removing a number from the list (DELETE) does not un-skip its recipients.

Cost of one call: a Query of the campaigns' list (every campaign item is read: the index has no
status key; opt-outs are rare next to sends), one GetItem of a phone marker per campaign not finished,
two writes per recipient skipped. Known gaps: an import running at the very moment of the opt-out,
past its own look at the list but before its phone markers are written, may still add the number;
a recipient `in_doubt` then is not skipped (policy auto or resend may send it again); a recipient
skipped while its import has not committed yet is skipped but not counted (its shard's counters show
it pending until a recount).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from pynamodb.exceptions import DeleteError, DoesNotExist

from . import imports, phones
from .config import Settings, settings
from .models import (
    LIST_CAMPAIGNS,
    LIST_SUPPRESSIONS,
    Campaign,
    Recipient,
    Shard,
    Suppression,
    conditional_failed,
    recipient_place,
    recipient_sk,
    shard_pk,
    write_if,
)
from .observability import logger, mask_phone
from .states import CampaignStatus as C
from .states import RecipientStatus as R
from .timestamps import iso_utc

SOURCE_REPLY, SOURCE_GRAPH, SOURCE_PERSON = "reply", "graph_131050", "person"
SOURCES = (SOURCE_REPLY, SOURCE_GRAPH, SOURCE_PERSON)
DEFAULT_KEYWORDS = ("STOP", "UNSUBSCRIBE")
# Campaigns that may still send: their pending recipients of a suppressed number are skipped.
NOT_FINISHED = (C.DRAFT, C.SCHEDULED, C.SENDING, C.PAUSED)
MAX_REPLY_CHARS = 256  # a keyword is a word or two: longer texts are not looked at
MAX_REASON_CHARS = 500


# -- opt-out replies ---------------------------------------------------------------------------------------


def keyword_key(text: str) -> str:
    """What a text is compared by: every space gone, case folded ("  Stop " and "S TOP" are "stop")."""
    return "".join(text.split()).casefold()


def opt_out_keywords(current: Settings | None = None) -> dict[str, str]:
    """The opt-out keywords by their comparison key, each in the form a reason names it ("STOP")."""
    configured = (current or settings()).opt_out_keywords.split(",")
    return {keyword_key(word): " ".join(word.split()).upper() for word in (*DEFAULT_KEYWORDS, *configured)
            if keyword_key(word)}


def _texts(message: dict) -> Iterator[str]:
    """What a person wrote or tapped: text.body, button.payload / text, interactive.button_reply.id / title."""
    text, button, interactive = (message.get(name) for name in ("text", "button", "interactive"))
    if isinstance(text, dict):
        yield text.get("body")
    if isinstance(button, dict):
        yield button.get("payload")
        yield button.get("text")
    reply = interactive.get("button_reply") if isinstance(interactive, dict) else None
    if isinstance(reply, dict):
        yield reply.get("id")
        yield reply.get("title")


def opt_outs_of(payload: object, current: Settings | None = None) -> list[tuple[str, str]]:
    """(sender's number, keyword) for each inbound message of a webhook body (`entry[].changes[]` with
    `field == "messages"`, `value.messages[]`) that is an opt-out; a number once per body."""
    keywords = opt_out_keywords(current)
    found: dict[str, str] = {}
    for entry in (payload.get("entry") or []) if isinstance(payload, dict) else []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            if not isinstance(change, dict) or change.get("field") != "messages":
                continue
            value = change.get("value") if isinstance(change.get("value"), dict) else {}
            messages = value.get("messages") if isinstance(value.get("messages"), list) else []
            for message in messages:
                if not isinstance(message, dict):
                    continue
                keyword = next((keywords[key] for text in _texts(message)
                                if isinstance(text, str) and len(text) <= MAX_REPLY_CHARS
                                and (key := keyword_key(text)) in keywords), None)
                if keyword is None:
                    continue
                try:
                    phone = phones.normalize(str(message.get("from") or ""))
                except phones.InvalidPhone as why:
                    logger.warning("opt-out from a number we cannot read", extra={
                        "phone": mask_phone(str(message.get("from") or "")), "why": str(why)})
                    continue
                found.setdefault(phone, keyword)
    return list(found.items())


def reply_reason(keyword: str) -> str:
    return f"opted out: replied {keyword}"


def graph_reason(code: int) -> str:
    return f"opted out of marketing messages: Graph error {code}"


def person_reason(reason: str | None) -> str:
    return f"suppressed by a person: {reason or 'no reason given'}"


# -- the list ------------------------------------------------------------------------------------------------


def suppress(phone: str, reason: str, source: str, now: float | None = None) -> tuple[bool, int]:
    """Put `phone` (E.164 digits) on the list, and skip its pending recipients in every campaign not
    finished. (whether the number was new on the list, how many recipients were skipped)."""
    now = time.time() if now is None else now
    reason = reason[:MAX_REASON_CHARS]
    added = write_if(
        Suppression(*Suppression.key(phone)),
        [Suppression.phone.set(phone), Suppression.reason.set(reason), Suppression.source.set(source),
         Suppression.suppressed_at.set(now), Suppression.created_at.set(iso_utc(now)),
         Suppression.list_pk.set(LIST_SUPPRESSIONS)],
        Suppression.PK.does_not_exist(),
    )
    skipped = skip_pending(phone, reason)
    logger.info("number suppressed", extra={"phone": mask_phone(phone), "source": source, "new": added,
                                            "skipped": skipped})
    return added, skipped


def remove(phone: str) -> bool:
    """Take `phone` off the list (False if it was not on it). Recipients it skipped stay skipped."""
    try:
        Suppression(*Suppression.key(phone)).delete(condition=Suppression.PK.exists())
    except DeleteError as error:
        if conditional_failed(error):
            return False
        raise
    logger.info("number taken off the suppression list", extra={"phone": mask_phone(phone)})
    return True


def find(phone: str) -> Suppression | None:
    try:
        return Suppression.get(*Suppression.key(phone), consistent_read=True)
    except DoesNotExist:
        return None


def view(item: Suppression) -> dict:
    return {"phone": item.phone, "reason": item.reason, "source": item.source,
            "created_at": iso_utc(item.created_at)}


# -- skipping what the campaigns still owe the number ------------------------------------------------------------


def skip_pending(phone: str, reason: str) -> int:
    """Skip the number's pending recipient in each campaign not finished; how many were skipped."""
    skipped = 0
    for campaign in Campaign.listing.query(LIST_CAMPAIGNS,
                                           filter_condition=Campaign.status.is_in(*(s.value for s in NOT_FINISHED))):
        skipped += _skip_in(campaign, phone, reason)
    return skipped


def _skip_in(campaign: Campaign, phone: str, reason: str) -> int:
    """Skip the number's pending recipient in the campaign: found through the number books of its
    imports (an import that died before its commit may have left one too; its recipient is skipped
    alike, invisible as it is)."""
    skipped = 0
    for book in imports.books_with(campaign.id, phone):
        shard, seq = recipient_place(int(book.numbers.as_dict()[phone]), int(campaign.shard_count))
        rec = Recipient(shard_pk(campaign.id, shard), recipient_sk(seq))
        # Pending only (states: pending -> skipped): a claimed recipient is on the wire and left to its send.
        if not write_if(rec, [Recipient.status.set(R.SKIPPED.value), Recipient.error_message.set(reason)],
                        (Recipient.status == R.PENDING.value) & (Recipient.import_id == book.import_id)):
            continue
        if _committed(campaign, book.import_id):
            write_if(Shard(*Shard.key(campaign.id, shard)), [Shard.skipped.add(1), Shard.webhook_moves.add(1)],
                     Shard.campaign_id.exists())
        logger.info("a suppressed number's pending recipient skipped", extra={
            "campaign_id": campaign.id, "shard": shard, "seq": seq, "phone": mask_phone(phone)})
        skipped += 1
    return skipped


def _committed(campaign: Campaign, import_id: str) -> bool:
    """Whether the import is committed (its recipients exist and are counted), read again if the
    listing's copy of the campaign does not say so yet."""
    if import_id in (campaign.imports or ()):
        return True
    fresh = Campaign.get(*Campaign.key(campaign.id), consistent_read=True)
    return import_id in (fresh.imports or ())
