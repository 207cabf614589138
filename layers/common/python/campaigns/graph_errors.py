"""The Graph API error table: the one place a code's class (what the sender does) and its meaning
(what an operator reads) are decided."""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    THROTTLED = "throttled"  # the number's throughput: slow the whole sender down, not a failure
    RETRY_RECIPIENT = "retry_recipient"  # pair rate: retry this recipient later
    RETRYABLE = "retryable"  # transient on Meta's side: retry with backoff
    RECIPIENT = "recipient"  # this recipient fails for good
    SUPPRESS = "suppress"  # this recipient fails and its number goes on the suppression list
    FATAL = "fatal"  # the campaign cannot go on: pause it with the reason and alarm


_TABLE: dict[int, tuple[ErrorClass, str]] = {
    130429: (ErrorClass.THROTTLED, "the number's throughput limit: the sender slows down"),
    131056: (ErrorClass.RETRY_RECIPIENT, "pair rate: too many messages to this user in a short time"),
    131057: (ErrorClass.RETRYABLE, "the number's throughput upgrade is in progress (up to a minute)"),
    1: (ErrorClass.RETRYABLE, "unknown error on Meta's side"),
    2: (ErrorClass.RETRYABLE, "service temporarily unavailable"),
    131000: (ErrorClass.RETRYABLE, "something went wrong on Meta's side"),
    131016: (ErrorClass.RETRYABLE, "service overloaded"),
    131026: (ErrorClass.RECIPIENT, "undeliverable: not on WhatsApp, or an old WhatsApp version"),
    131050: (ErrorClass.SUPPRESS, "the user stopped marketing messages: the number is suppressed"),
    131049: (ErrorClass.RECIPIENT, "not delivered to keep the ecosystem healthy (per-user marketing limit)"),
    131047: (ErrorClass.RECIPIENT, "outside the 24 h re-engagement window"),
    132005: (ErrorClass.RECIPIENT, "a variable of this recipient is too long"),
    132007: (ErrorClass.RECIPIENT, "a variable of this recipient breaks the template's format policy"),
    100: (ErrorClass.RECIPIENT, "an invalid or missing parameter"),
    131008: (ErrorClass.RECIPIENT, "a required parameter is missing"),
    131009: (ErrorClass.RECIPIENT, "a parameter value is not valid"),
    130497: (ErrorClass.RECIPIENT, "the business may not message users in that country"),
    0: (ErrorClass.FATAL, "the access token expired"),
    190: (ErrorClass.FATAL, "the access token is invalid or expired"),
    10: (ErrorClass.FATAL, "the app lacks a permission"),
    368: (ErrorClass.FATAL, "the number is temporarily blocked for policy violations"),
    131031: (ErrorClass.FATAL, "the business account is locked"),
    131048: (ErrorClass.FATAL, "spam rate limit: the number's quality is low"),
    4: (ErrorClass.FATAL, "the app's API call rate limit"),
    80007: (ErrorClass.FATAL, "the business account's rate limit"),
    132000: (ErrorClass.FATAL, "the template's parameter count does not match"),
    132001: (ErrorClass.FATAL, "the template does not exist in that language, or is not approved"),
    132012: (ErrorClass.FATAL, "a template parameter has the wrong format"),
    132015: (ErrorClass.FATAL, "the template is paused for low quality"),
    132016: (ErrorClass.FATAL, "the template is disabled for low quality"),
}
_PERMISSION_CODES = range(200, 300)

# Codes of our own for answers without a Graph error: no connection, or a 5xx without a body.
CONNECTION = -2
HTTP_5XX = -3


def classify(code: int, http_status: int = 400) -> ErrorClass:
    """The class of an error code; an unknown code is retryable on 5xx, else a recipient failure."""
    if code in _TABLE:
        return _TABLE[code][0]
    if code in _PERMISSION_CODES:
        return ErrorClass.FATAL
    if code in (CONNECTION, HTTP_5XX) or http_status >= 500:
        return ErrorClass.RETRYABLE
    return ErrorClass.RECIPIENT


def meaning(code: int | None) -> str:
    """What the code means, for an operator (the dashboard, campaignctl)."""
    if code in _TABLE:
        return _TABLE[code][1]
    if code in _PERMISSION_CODES:
        return "the app lacks a permission"
    if code == CONNECTION:
        return "no answer from Graph (connection failed or timed out)"
    if code == HTTP_5XX:
        return "Graph answered a server error without an error body"
    return "not in the error table (a recipient failure unless Graph answered 5xx)"
