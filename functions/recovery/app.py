"""Recovery: a schedule tick, or a sender's on-failure destination record (see campaigns.recovery)."""

from campaigns.config import settings
from campaigns.observability import logger, metrics, tracer
from campaigns.recovery import handle


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event, context):
    return handle(event, settings())
