"""The Graph API error-class table: the one place a code's meaning is decided."""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    THROTTLED = "throttled"  # the number's throughput: slow the whole sender down, not a failure
    RETRY_RECIPIENT = "retry_recipient"  # pair rate: retry this recipient later
    RETRYABLE = "retryable"  # transient on Meta's side: retry with backoff
    RECIPIENT = "recipient"  # this recipient fails for good
    SUPPRESS = "suppress"  # this recipient fails and its number goes on the suppression list
    FATAL = "fatal"  # the campaign cannot go on: pause it with the reason and alarm


_TABLE: dict[int, ErrorClass] = {
    130429: ErrorClass.THROTTLED,
    131056: ErrorClass.RETRY_RECIPIENT,
    131057: ErrorClass.RETRYABLE,
    1: ErrorClass.RETRYABLE,
    2: ErrorClass.RETRYABLE,
    131000: ErrorClass.RETRYABLE,
    131016: ErrorClass.RETRYABLE,
    131026: ErrorClass.RECIPIENT,
    131050: ErrorClass.SUPPRESS,
    131049: ErrorClass.RECIPIENT,
    131047: ErrorClass.RECIPIENT,
    132005: ErrorClass.RECIPIENT,
    132007: ErrorClass.RECIPIENT,
    100: ErrorClass.RECIPIENT,
    131008: ErrorClass.RECIPIENT,
    131009: ErrorClass.RECIPIENT,
    130497: ErrorClass.RECIPIENT,
    0: ErrorClass.FATAL,
    190: ErrorClass.FATAL,
    10: ErrorClass.FATAL,
    368: ErrorClass.FATAL,
    131031: ErrorClass.FATAL,
    131048: ErrorClass.FATAL,
    4: ErrorClass.FATAL,
    80007: ErrorClass.FATAL,
    132000: ErrorClass.FATAL,
    132001: ErrorClass.FATAL,
    132012: ErrorClass.FATAL,
    132015: ErrorClass.FATAL,
    132016: ErrorClass.FATAL,
}
_PERMISSION_CODES = range(200, 300)

# Codes of our own for answers without a Graph error: no connection, or a 5xx without a body.
CONNECTION = -2
HTTP_5XX = -3


def classify(code: int, http_status: int = 400) -> ErrorClass:
    """The class of an error code; an unknown code is retryable on 5xx, else a recipient failure."""
    if code in _TABLE:
        return _TABLE[code]
    if code in _PERMISSION_CODES:
        return ErrorClass.FATAL
    if code in (CONNECTION, HTTP_5XX) or http_status >= 500:
        return ErrorClass.RETRYABLE
    return ErrorClass.RECIPIENT
