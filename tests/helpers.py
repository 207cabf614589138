"""Building campaigns and checking the invariants against what the fake Graph API received."""

from __future__ import annotations

import io
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager

from campaigns import service, views
from campaigns.config import settings
from campaigns.models import Recipient, shard_pk
from campaigns.observability import logger
from campaigns.states import OPEN_RECIPIENT

TEMPLATE = {
    "name": "diwali_offer",
    "language": "en_US",
    "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}]}],
}


def new_campaign(recipients: int, rate: int = 80, in_doubt_policy: str = "skip", phone_number_id="1234567890"):
    spec = service.CampaignSpec(
        name="test", phone_number_id=phone_number_id, template=TEMPLATE, rate=rate, in_doubt_policy=in_doubt_policy
    )
    campaign = service.create_campaign(spec, settings())
    rows = [service.RecipientRow(phone=f"91987{n:07d}", variables=[f"name{n}"]) for n in range(recipients)]
    service.add_recipients(campaign.id, rows)
    return campaign


def recipients(campaign) -> list[Recipient]:
    found = []
    for shard in range(int(campaign.shard_count)):
        found += list(Recipient.query(shard_pk(campaign.id, shard), Recipient.SK.startswith("R#"),
                                      consistent_read=True))
    return found


def live_senders(stack) -> list[dict]:
    return [i for i in stack.runtime.invocations() if i["function"] == "sender" and i["pid"]]


def senders_stopped(stack) -> bool:
    """No sender batch alive, nor any invocation waiting to start."""
    return not live_senders(stack) and stack.runtime.queued() == 0


def status(campaign) -> dict:
    return views.campaign_status(campaign.id, settings())


def audit(campaign, fake) -> dict:
    """The invariants, from the store and from what the provider received."""
    recs = recipients(campaign)
    by_key = {r.callback_key: r for r in recs}
    sends = Counter(s["callback"] for s in fake.sends() if s["callback"] in by_key)
    statuses = Counter(r.status for r in recs)
    duplicates = {key: n for key, n in sends.items() if n > 1}
    return {
        "statuses": statuses,
        "lost": sum(1 for r in recs if r.status in OPEN_RECIPIENT),
        "duplicates": duplicates,
        # A duplicate is allowed only for a recipient that was in doubt under policy `resend`.
        "forbidden_duplicates": {
            k: n for k, n in duplicates.items()
            if not (campaign.in_doubt_policy == "resend" and by_key[k].in_doubt_at is not None)
        },
        # Every recipient the store calls sent really reached the provider.
        "sent_not_received": [r.callback_key for r in recs if r.status == "sent" and not sends.get(r.callback_key)],
        # Every send the provider received belongs to a recipient marked sent or in doubt (or a
        # failure that came later by webhook): nothing is sent that the store thinks is pending.
        "received_not_accounted": [
            k for k in sends if by_key[k].status not in ("sent", "in_doubt", "failed")
        ],
        "in_doubt": statuses.get("in_doubt", 0),
    }


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll for a state with a deadline (never a bare sleep standing in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def captured_logs():
    """Everything the shared logger writes, formatted as in CloudWatch (message and extra keys)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    level = logger.log_level
    logger.setLevel("DEBUG")
    try:
        yield stream
    finally:
        logger.setLevel(level)
        logger._logger.removeHandler(handler)
