"""The HTTP edge both handlers share (the campaign API and the webhook).

One form for every answer: JSON, and for a refusal `{"error": {"code", "message", "field"}}` (409s add
`current_status`); the body as its sender wrote it (API Gateway, and the webhook's function URL, hand
binary bodies over in base64); a body over the limit refused before anything parses it; the 404 of an
unknown route (REST or function URL events alike); and the map from the domain's refusals
(errors.ServiceError, imports.ImportRejected) to their answers.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools.event_handler import ApiGatewayResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from .errors import Conflict, ServiceError, Unprocessable
from .imports import ImportRejected
from .observability import logger


def json_answer(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body=json.dumps(body, default=str), headers=headers)


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict:
    error = {"code": code, "message": message, "field": field}
    if "current_status" in extra:
        error["current_status"] = extra.pop("current_status")
    return {"error": error, **extra}


def error_answer(status: int, code: str, message: str, field: str | None = None, **extra: Any) -> Response:
    return json_answer(status, error_body(code, message, field, **extra))


class MalformedBody(Exception):
    """The body says it is base64 and is not."""


def raw_body(body: str | None, base64_encoded: bool) -> bytes:
    """The bytes the client sent (and, for a webhook, signed)."""
    if not body:
        return b""
    if not base64_encoded:
        return body.encode()
    try:
        return base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError):
        raise MalformedBody("the body is not valid base64") from None


def body_size(event: dict) -> int:
    """The body's size in bytes, from the raw proxy event (before any parsing)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return len(body) * 3 // 4
    return len(body.encode())


def too_large(limit: int) -> dict:
    """The proxy answer for a body over `limit` bytes, given before routing."""
    return {
        "statusCode": 413,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(error_body("payload_too_large", too_large_message(limit), "body")),
        "isBase64Encoded": False,
    }


def too_large_message(limit: int) -> str:
    return f"the body is larger than {limit} bytes: send it as several imports"


def answer_refusals(app: ApiGatewayResolver) -> None:
    """Register the answers every handler gives: unknown routes, the domain's refusals, the unexpected."""

    @app.not_found
    def _not_found(_: NotFoundError) -> Response:
        event = app.current_event
        return error_answer(404, "not_found", f"no route {event.http_method} {event.path}", "path")

    @app.exception_handler(ServiceError)
    def _service_error(error: ServiceError) -> Response:
        extra: dict = {}
        if isinstance(error, Conflict):
            extra["current_status"] = error.current_status
            if error.field is None:
                error.field = "status"
        if isinstance(error, Unprocessable):
            extra.update(error.details)
        return error_answer(error.status, error.code, error.message, error.field, **extra)

    @app.exception_handler(ImportRejected)
    def _import_rejected(error: ImportRejected) -> Response:
        return error_answer(error.status, error.code, error.message, error.field)

    @app.exception_handler(MalformedBody)
    def _malformed(error: MalformedBody) -> Response:
        return error_answer(400, "malformed_body", str(error), "body")

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response:
        # A 5xx: the client (Meta, for the webhook) retries; nothing of the request was half-written.
        logger.exception("unhandled error")
        return error_answer(500, "internal_error", "internal error; the request may be retried", None)
