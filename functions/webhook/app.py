"""WhatsApp status webhook: GET verification, POST signed statuses (see campaigns.statuses).

Meta retries any answer but 200 for days, so a valid delivery is answered 200 as soon as its
statuses are applied (each is idempotent: a retry changes nothing); a store error answers 500 so
that Meta retries it. Bodies whose signature is missing (401) or wrong (403) change nothing.
"""

import base64
import binascii
import hmac
import json

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths

from campaigns import statuses
from campaigns.config import settings, whatsapp_secret
from campaigns.observability import Metric, count, logger, metrics, tracer

app = APIGatewayRestResolver()


def _json(status: int, body: dict) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def _error(status: int, code: str, message: str, field: str | None = None) -> Response:
    return _json(status, {"error": {"code": code, "message": message, "field": field}})


@app.get("/webhook")
def verify():
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    params = app.current_event.query_string_parameters or {}
    mode, token, challenge = params.get("hub.mode"), params.get("hub.verify_token"), params.get("hub.challenge")
    expected = whatsapp_secret(settings()).get("verify_token") or ""
    if mode == "subscribe" and token and expected and hmac.compare_digest(token, expected) and challenge:
        return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body=challenge)
    count(Metric.WEBHOOK_REJECTED)
    return _error(403, "forbidden", "verification failed", "hub.verify_token")


@app.post("/webhook")
def receive():
    event = app.current_event
    raw = _raw_body(event.body, event.is_base64_encoded)
    try:
        statuses.verify_signature(raw, event.headers.get("x-hub-signature-256"),
                                  whatsapp_secret(settings())["app_secret"])
    except statuses.SignatureError as error:
        count(Metric.WEBHOOK_REJECTED)
        logger.warning("webhook refused", extra={"why": str(error)})
        if error.missing:
            return _error(401, "unauthorized", "X-Hub-Signature-256 is missing", "X-Hub-Signature-256")
        return _error(403, "forbidden", "X-Hub-Signature-256 does not match the body", "X-Hub-Signature-256")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "malformed_json", "the body is not valid JSON", "body")
    outcomes = statuses.apply_all(payload)
    total = sum(outcomes.values())
    if total:
        count(Metric.WEBHOOK_STATUSES, total)
    logger.info("webhook applied", extra={"outcomes": dict(outcomes)})
    return _json(200, {"statuses": total, **outcomes})


def _raw_body(body: str | None, base64_encoded: bool) -> bytes:
    """The bytes Meta signed: API Gateway hands them over as text, or base64 for binary types."""
    if not body:
        return b""
    if base64_encoded:
        try:
            return base64.b64decode(body)
        except (binascii.Error, ValueError):
            return b""  # cannot match any signature
    return body.encode()


@app.not_found
def _not_found(_: NotFoundError):
    return _error(404, "not_found", f"no route {app.current_event.http_method} {app.current_event.path}", "path")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
