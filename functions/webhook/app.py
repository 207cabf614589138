"""WhatsApp webhook: GET verification, POST signed statuses (campaigns.statuses), template events
(campaigns.provider_events) and opt-out replies (campaigns.suppressions).

Served by the function's own URL (template.yaml: FunctionUrlConfig, AuthType NONE; payload format 2.0):
public, so every request is authenticated here. A function URL passes every path and method on; only
GET and POST /webhook are routes, anything else is 404 and touches nothing.

Meta retries any answer but 200 for days, so a valid delivery is answered 200 as soon as its
statuses are applied (each is idempotent: a retry changes nothing); a store error answers 500 so
that Meta retries it. Bodies whose signature is missing (401) or wrong (403) change nothing.
"""

import hmac
import json
import warnings

from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths

from campaigns import edge, provider_events, statuses, suppressions
from campaigns.config import settings, whatsapp_secret
from campaigns.observability import Metric, count, logger, metrics, tracer

# Most requests publish no metric (only refusals and opt-outs do): Powertools' advice for that case.
warnings.filterwarnings("ignore", "No application metrics to publish*")

app = LambdaFunctionUrlResolver()
edge.answer_refusals(app)


@app.get("/webhook")
def verify():
    """Meta's subscription check: echo hub.challenge when hub.verify_token is ours."""
    params = app.current_event.query_string_parameters or {}
    mode, token, challenge = params.get("hub.mode"), params.get("hub.verify_token"), params.get("hub.challenge")
    expected = whatsapp_secret(settings()).get("verify_token") or ""
    if mode == "subscribe" and token and expected and hmac.compare_digest(token, expected) and challenge:
        return Response(status_code=200, content_type=content_types.TEXT_PLAIN, body=challenge)
    count(Metric.WEBHOOK_REJECTED)
    return edge.error_answer(403, "forbidden", "verification failed", "hub.verify_token")


@app.post("/webhook")
def receive():
    event = app.current_event
    try:
        raw = edge.raw_body(event.body, event.is_base64_encoded)
    except edge.MalformedBody:
        raw = b""  # cannot match any signature
    try:
        statuses.verify_signature(raw, event.headers.get("x-hub-signature-256"),
                                  whatsapp_secret(settings())["app_secret"])
    except statuses.SignatureError as error:
        count(Metric.WEBHOOK_REJECTED)
        logger.warning("webhook refused", extra={"why": str(error)})
        if error.missing:
            return edge.error_answer(401, "unauthorized", "X-Hub-Signature-256 is missing", "X-Hub-Signature-256")
        return edge.error_answer(403, "forbidden", "X-Hub-Signature-256 does not match the body", "X-Hub-Signature-256")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return edge.error_answer(400, "malformed_json", "the body is not valid JSON", "body")
    outcomes = statuses.apply_all(payload)
    provider_events.apply_all(payload, settings())  # Meta paused a template, or restricted an account
    opt_outs = suppressions.opt_outs_of(payload, settings())
    for phone, keyword in opt_outs:  # a person replied STOP: never sent to again
        suppressions.suppress(phone, suppressions.reply_reason(keyword), suppressions.SOURCE_REPLY)
    total = sum(outcomes.values())
    # No metric per request: one EMF line per webhook was most of the function's log bytes, and
    # Lambda counts its invocations (the dashboard's "Webhooks"); the campaigns count the statuses.
    if opt_outs:
        count(Metric.OPT_OUTS, len(opt_outs))
    # Debug: one line per webhook would be all of the function's log bytes (Lambda counts the requests).
    logger.debug("webhook applied", extra={"outcomes": dict(outcomes), "opt_outs": len(opt_outs)})
    return edge.json_answer(200, {"statuses": total, **outcomes, **({"opt_outs": len(opt_outs)} if opt_outs else {})})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event, context):
    return app.resolve(event, context)
