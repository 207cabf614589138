"""Asynchronous invocation of a sender batch (Lambda's `Event` invocation type).

Locally AWS_ENDPOINT_URL_LAMBDA points boto3 at the local runtime, which implements the
same Invoke API: this module does not know which one it talks to.
"""

from __future__ import annotations

import json
from functools import cache

import boto3
from botocore.config import Config

from .config import Settings


@cache
def _lambda_client():
    return boto3.client("lambda", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def sender_event(campaign_id: str, shard: int, token: str, hop: int = 0) -> dict:
    return {"campaign_id": campaign_id, "shard": shard, "token": token, "hop": hop}


def invoke_sender(settings: Settings, event: dict) -> None:
    """Start a sender batch. If this call is lost, the shard's lease expires and recovery steps in."""
    _lambda_client().invoke(
        FunctionName=settings.sender_function_name,
        InvocationType="Event",
        Payload=json.dumps(event).encode(),
    )
