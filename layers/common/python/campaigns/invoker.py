"""Asynchronous invocation of a sender batch (Lambda's `Event` invocation type).

Locally AWS_ENDPOINT_URL_LAMBDA points boto3 at the local runtime, which implements the
same Invoke API: this module does not know which one it talks to.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .config import Settings
from .observability import logger


@cache
def _lambda_client():
    return boto3.client("lambda", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


@dataclass(frozen=True)
class SenderEvent:
    """The event a sender batch is invoked with: which shard, under which lease reservation (the
    token `lease.hand_to` wrote), and how many hand-offs led to it (the hop guard's count)."""

    campaign_id: str
    shard: int
    token: str
    hop: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def parse(cls, event: dict) -> SenderEvent | None:
        """The event, or None if it is not a sender event (a record of something else)."""
        try:
            campaign_id, shard, token = event["campaign_id"], int(event["shard"]), event["token"]
            hop = int(event.get("hop", 0))
        except (KeyError, TypeError, ValueError):
            return None
        if not (isinstance(campaign_id, str) and campaign_id and isinstance(token, str) and token):
            return None
        return cls(campaign_id, shard, token, hop)


def sender_event(campaign_id: str, shard: int, token: str, hop: int = 0) -> dict:
    return SenderEvent(campaign_id, shard, token, hop).as_dict()


def invoke_sender(settings: Settings, event: dict) -> bool:
    """Start a sender batch; False if Lambda would not take the event.

    Callers reserve the shard's lease for the event before invoking, so a failed (or lost)
    invoke only delays the shard: its reservation expires and recovery takes it over.
    """
    try:
        _lambda_client().invoke(
            FunctionName=settings.sender_function_name,
            InvocationType="Event",
            Payload=json.dumps(event).encode(),
        )
        return True
    except (BotoCoreError, ClientError):
        logger.exception("could not invoke the sender; recovery takes the shard over when its lease expires",
                         extra={"campaign_id": event.get("campaign_id"), "shard": event.get("shard")})
        return False
