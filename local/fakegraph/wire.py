"""The fake's wire formats: Graph error bodies and codes, send replies, status webhook bodies, the
webhook signature header, and the parsing of a template send's body."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

# HTTP status per Graph error code; everything else is a 400, like the real API.
HTTP_STATUS_BY_CODE = {0: 401, 190: 401, 1: 500, 2: 503, 131000: 500, 131016: 503}

ERROR_TITLES = {
    0: "AuthException",
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    4: "Application request limit reached",
    10: "Permission denied",
    100: "Invalid parameter",
    190: "Invalid OAuth access token",
    368: "Temporarily blocked for policies violations",
    130429: "Rate limit hit",
    130497: "Business account is restricted from messaging users in this country",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131016: "Service unavailable",
    131026: "Message undeliverable",
    131031: "Business Account locked",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement",
    131050: "User has stopped marketing messages",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131057: "Account in maintenance mode",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132015: "Template is Paused",
    132016: "Template is Disabled",
}

WEBHOOK_FAILED_CODE = 131026
FAKE_WABA_ID = "100000000000001"
FAKE_DISPLAY_PHONE_NUMBER = "15550001234"
MAX_CALLBACK_CHARS = 512

_NOT_DIGITS = re.compile(r"\D")


def digits_of(phone: str) -> str:
    """The digits of a phone number: the WhatsApp id and the key of `reject_numbers`."""
    return _NOT_DIGITS.sub("", phone)


def graph_error(code: int, details: str) -> dict:
    """An error body in the Graph shape; clients branch on `code` (and `details`), never on the message."""
    title = ERROR_TITLES.get(code, "Fake Graph error")
    return {
        "error": {
            "message": f"(#{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "Fake" + secrets.token_urlsafe(9),
        }
    }


def send_accepted(to: str, wamid: str) -> dict:
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": digits_of(to)}],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }


def status_webhook(record: dict, status: str) -> dict:
    """The body Meta posts for one status of one message (graph-api.md, "Status webhook")."""
    event = {
        "id": record["wamid"],
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": digits_of(record["to"]),
    }
    if record["callback"] is not None:
        event["biz_opaque_callback_data"] = record["callback"]
    if status == "failed":
        title = ERROR_TITLES[WEBHOOK_FAILED_CODE]
        event["errors"] = [
            {
                "code": WEBHOOK_FAILED_CODE,
                "title": title,
                "message": title,
                "error_data": {"details": "Message failed to send because the recipient is not reachable."},
            }
        ]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": FAKE_DISPLAY_PHONE_NUMBER,
            "phone_number_id": record["phone_number_id"],
        },
        "statuses": [event],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": FAKE_WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }


def signature_header(body: bytes, app_secret: str) -> str:
    """The X-Hub-Signature-256 value: HMAC-SHA256 of the raw body, keyed with the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class MalformedRequest(ValueError):
    """The send body does not have the shape of a template send (Graph answers 400, code 100)."""


@dataclass(frozen=True)
class SendRequest:
    to: str
    callback: str | None


def parse_send_body(raw: bytes) -> SendRequest:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    if body.get("messaging_product") != "whatsapp":
        raise MalformedRequest("messaging_product must be 'whatsapp'")
    to = body.get("to")
    if not isinstance(to, str) or not 5 <= len(digits_of(to)) <= 15:
        raise MalformedRequest("'to' must be a phone number")
    if body.get("type") != "template":
        raise MalformedRequest("type must be 'template'")
    _check_template(body.get("template"))
    callback = body.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > MAX_CALLBACK_CHARS):
        raise MalformedRequest(
            f"biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_CHARS} characters"
        )
    return SendRequest(to=to, callback=callback)


def _check_template(template) -> None:
    if not isinstance(template, dict):
        raise MalformedRequest("template must be an object")
    if not isinstance(template.get("name"), str) or not template["name"]:
        raise MalformedRequest("template.name is required")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str) or not language["code"]:
        raise MalformedRequest("template.language.code is required")
    if not isinstance(template.get("components", []), list):
        raise MalformedRequest("template.components must be a list")


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    record: dict | None = None  # the send record when accepted


def error_reply(code: int, details: str) -> Reply:
    return Reply(HTTP_STATUS_BY_CODE.get(code, 400), graph_error(code, details))
