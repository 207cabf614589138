"""Logger, tracer and metrics shared by every function, and the names of the metrics we emit.

The CloudWatch dashboard and alarms in template.yaml name these metrics; a test checks that
every metric the template names is one listed here.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "WhatsAppCampaigns"

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=NAMESPACE)


class Metric:
    MESSAGES_SENT = "MessagesSent"
    MESSAGES_FAILED = "MessagesFailed"  # with dimension ErrorClass
    MESSAGES_THROTTLED = "MessagesThrottled"
    MESSAGES_RETRIED = "MessagesRetried"
    MESSAGES_IN_DOUBT = "MessagesInDoubt"
    IN_DOUBT_RESOLVED = "InDoubtResolved"
    RESENT_AFTER_ABSENCE = "ResentAfterProofOfAbsence"
    DUPLICATE_SENDS = "DuplicateSends"  # a late status showed an in-doubt recipient resent was sent twice
    SEND_LATENCY = "SendLatency"
    BATCHES_STARTED = "BatchesStarted"
    BATCHES_FINISHED = "BatchesFinished"
    SHARDS_TAKEN_OVER = "ShardsTakenOver"
    STUCK_SHARDS = "StuckShards"
    CAMPAIGNS_PAUSED_FATAL = "CampaignsPausedByFatalError"
    CAMPAIGNS_COMPLETED = "CampaignsCompleted"
    WEBHOOK_REJECTED = "WebhookRejected"
    OPT_OUTS = "OptOutReplies"  # inbound messages that were an opt-out keyword (campaigns.suppressions)
    HISTORY_WRITES_FAILED = "HistoryWritesFailed"  # a campaign's history event not written (campaigns.history)
    TEST_SENDS = "TestSends"  # numbers test-sent to by POST /campaigns/{id}/test (campaigns.test_sends)

    @classmethod
    def names(cls) -> set[str]:
        return {v for k, v in vars(cls).items() if k.isupper()}


def count(name: str, value: float = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def latency_ms(name: str, value: float) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=value)


def count_now(name: str, value: float = 1) -> None:
    """A count emitted at once, whichever function it is in (the API flushes no metrics of its own)."""
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=NAMESPACE):
        pass


def count_failed(error_class: str | None) -> None:
    """One failed message, by its error class: a metric of its own, as the dimension is per message."""
    with single_metric(name=Metric.MESSAGES_FAILED, unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as m:
        m.add_dimension(name="ErrorClass", value=str(error_class or "unknown"))


def count_test_sends(value: int) -> None:
    """Test sends of one request, flushed at once: the API function emits no other metric (it has no
    flush of its own at the end of a request). Their outcomes are in the log ("test send")."""
    with single_metric(name=Metric.TEST_SENDS, unit=MetricUnit.Count, value=value, namespace=NAMESPACE):
        pass


def mask_phone(phone: str | None) -> str | None:
    """Phone numbers never reach the logs (or a screen) whole: the country prefix and the last two digits."""
    if not phone:
        return phone
    digits = phone.lstrip("+")
    if len(digits) <= 5:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 5)}{digits[-2:]}"
