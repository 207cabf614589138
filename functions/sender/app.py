"""Sender: one time-bounded batch of one shard (see campaigns.sender)."""

from campaigns.config import settings
from campaigns.observability import logger, metrics, tracer
from campaigns.sender import run_batch


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event, context):
    return run_batch(event, lambda: context.get_remaining_time_in_millis() / 1000, settings())
