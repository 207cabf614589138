"""HTTP API: thin routes over campaigns.service. Routes, errors and curl examples: docs/api.md;
the OpenAPI schema (openapi.json, GET /openapi.json) is generated from these routes.

Every 4xx answer is `{"error": {"code", "message", "field"}}` (409s add `current_status`), and
nothing is written when a request is refused.
"""

import json
import re
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)

from campaigns import (
    clones,
    edge,
    export,
    history,
    imports,
    numbers,
    phones,
    service,
    suppressions,
    templates,
    test_sends,
    views,
)
from campaigns.api_models import (
    CampaignOut,
    CampaignPage,
    ClonedCampaign,
    CloneIn,
    CreateCampaign,
    CreatedCampaign,
    ErrorOut,
    EventPage,
    ImportReport,
    ImportRequest,
    NumberIn,
    NumberList,
    NumberOut,
    RecipientPage,
    RetryOut,
    SendTestIn,
    SendTestOut,
    SuppressionAdded,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
)
from campaigns.config import settings
from campaigns.observability import logger, tracer
from campaigns.states import CampaignStatus, RecipientStatus

app = APIGatewayRestResolver(enable_validation=True)
edge.answer_refusals(app)

API_TITLE = "WhatsApp campaigns API"
API_VERSION = "1.0.0"
# How long an Idempotency-Key is remembered (the record's `expires_at` is the table's TTL).
IDEMPOTENCY_SECONDS = 24 * 3600
_CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


# -- answers ----------------------------------------------------------------------------------------


def _errors(*statuses: int, not_found: str = "unknown campaign") -> dict:
    """OpenAPI entries for the error answers a route can give."""
    text = {400: "malformed JSON", 404: not_found, 409: "not allowed in the campaign's current status",
            413: "body or row count over the limit", 415: "unsupported content type", 422: "invalid input"}
    return {s: {"description": text[s], "content": {"application/json": {"model": ErrorOut}}} for s in statuses}


def _ok(status: int, model: type, description: str) -> dict:
    return {status: {"description": description, "content": {"application/json": {"model": model}}}}


# -- errors ------------------------------------------------------------------------------------------


def _field(loc: tuple) -> str | None:
    """("body", "recipients", 3, "phone") → "recipients[3].phone"; ("query", "limit") → "limit"."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    if not parts:
        return loc[0] if loc else None
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


@app.exception_handler(RequestValidationError)
def _invalid(error: RequestValidationError) -> Response:
    found = error.errors()
    if any(e.get("type") == "json_invalid" for e in found):
        return edge.error_answer(400, "malformed_json", "the body is not valid JSON", "body")
    details = [{"field": _field(tuple(e.get("loc", ()))), "message": _message(e)} for e in found]
    first = details[0] if details else {"field": None, "message": "invalid request"}
    return edge.error_answer(422, "validation_error", f"{first['field']}: {first['message']}", first["field"],
                  details=details)


@app.exception_handler(RequestUnsupportedContentType)
def _unsupported(_: Exception) -> Response:
    media = app.current_event.headers.get("content-type") or ""
    return edge.error_answer(415, "unsupported_media_type", f"send application/json, not {media[:80]}", "Content-Type")


def _message(error: dict) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


@app.exception_handler(IdempotencyValidationError)
def _key_reused(_: Exception) -> Response:
    return edge.error_answer(422, "idempotency_key_reused",
                  "this Idempotency-Key was used with a different body", "Idempotency-Key")


@app.exception_handler(IdempotencyAlreadyInProgressError)
def _key_in_progress(_: Exception) -> Response:
    return edge.error_answer(409, "idempotency_in_progress",
                  "a request with this Idempotency-Key is still running; retry shortly", "Idempotency-Key")


def _campaign_id(value: str) -> str:
    """An id this API could have given out; anything else is an unknown campaign (never a store error)."""
    if not _CAMPAIGN_ID.match(value):
        raise service.NotFound(f"campaign {value[:64]} not found", field="id")
    return value


# -- idempotent create ---------------------------------------------------------------------------------


@cache
def _idempotency() -> tuple[IdempotencyConfig, Any]:
    """Powertools Idempotency on the campaigns table itself: PK=IDEMPOTENCY, SK=<key hash>, TTL expires_at."""
    persistence = DynamoDBPersistenceLayer(
        table_name=settings().table_name,
        key_attr="PK",
        sort_key_attr="SK",
        static_pk_value="IDEMPOTENCY",
        expiry_attr="expires_at",
    )
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="body",
        expires_after_seconds=IDEMPOTENCY_SECONDS,
        response_hook=lambda response, _record: {**response, "replayed": True},
    )

    @idempotent_function(data_keyword_argument="request", persistence_store=persistence, config=config,
                         key_prefix="create_campaign")
    def create_once(request: dict, spec: service.CampaignSpec, recipients: imports.Parsed | None) -> dict:
        campaign_id, report = service.create(spec, settings(), recipients)
        return {"id": campaign_id, "import": report}

    return config, create_once


# -- routes ------------------------------------------------------------------------------------------------


@app.post(
    "/campaigns",
    status_code=201,
    summary="Create a campaign (draft, or scheduled with send_at), optionally with its recipients",
    description="With an `Idempotency-Key` header, a retry with the same key and body answers the same "
    "campaign (header `Idempotent-Replayed: true`); the same key with another body is refused (422).",
    responses={**_ok(201, CreatedCampaign, "the campaign"), **_errors(400, 409, 413, 415, 422)},
    tags=["campaigns"],
)
def create_campaign(
    body: Annotated[CreateCampaign, Body()],
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=r"^[\x21-\x7e]{1,255}$",
                           description="makes retries of this request safe (remembered 24 h)")
    ] = None,
):
    template = body.template.as_stored()
    recipients = None
    if body.recipients:
        recipients = imports.parse_items([r.model_dump() for r in body.recipients],
                                         templates.variable_count(template))
    spec = service.CampaignSpec(
        name=body.name,
        phone_number_id=body.phone_number_id,
        template=template,
        rate=body.rate,
        in_doubt_policy=body.in_doubt_policy,
        send_at=body.send_at.timestamp() if body.send_at else None,
        send_window=body.send_window.model_dump(exclude_none=True) if body.send_window else None,
        expires_at=body.expires_at.timestamp() if body.expires_at else None,
        api=body.api.value,
    )
    headers = {}
    if idempotency_key:
        _, create_once = _idempotency()
        done = create_once(request={"key": idempotency_key, "body": body.model_dump(mode="json")},
                           spec=spec, recipients=recipients)
        if done.get("replayed"):
            headers["Idempotent-Replayed"] = "true"
        campaign_id, report = done["id"], done.get("import")
    else:
        campaign_id, report = service.create(spec, settings(), recipients)
    answer = views.campaign_status(campaign_id, settings())
    if report is not None:
        answer["import"] = report
    return edge.json_answer(201, answer, {"Location": f"/campaigns/{campaign_id}", **headers})


@app.post(
    "/campaigns/<id>/recipients",
    summary="Import recipients (JSON or CSV) into a draft or scheduled campaign",
    description="JSON `{\"recipients\": [{\"phone\", \"variables\"}]}` or `text/csv` with a header line "
    "`phone,var1,var2,...`. Invalid rows are rejected one by one (JSON: 0-based `index`; CSV: 1-based "
    "`line`, header = line 1); numbers repeated in the request or already in the campaign, and numbers on "
    "the suppression list, are dropped and counted. No valid row at all: 422 and nothing is written.",
    responses={**_ok(200, ImportReport, "what was imported"), **_errors(400, 404, 409, 413, 415, 422)},
    tags=["recipients"],
)
def import_recipients(id: str):
    campaign = views.get_campaign(_campaign_id(id))
    service.require_importable(campaign)
    event = app.current_event
    raw = edge.raw_body(event.body, event.is_base64_encoded)
    limit = settings().max_import_bytes
    if len(raw) > limit:
        return edge.error_answer(413, "payload_too_large", edge.too_large_message(limit), "body")
    expected = templates.variable_count(campaign.template)
    media = (app.current_event.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media in CSV_TYPES:
        parsed = imports.parse_csv(raw, expected)
    elif media in ("", "application/json"):
        parsed = imports.parse_items(_recipients_of(raw), expected)
    else:
        return edge.error_answer(415, "unsupported_media_type", f"send application/json or text/csv, not {media}",
                      "Content-Type")
    return edge.json_answer(200, service.import_recipients(id, parsed))


def _recipients_of(raw: bytes) -> list:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise imports.ImportRejected(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise imports.ImportRejected(422, "validation_error", 'the body must be {"recipients": [...]}')
    unknown = sorted(set(document) - {"recipients"})
    if unknown:
        raise imports.ImportRejected(422, "validation_error", f"unknown field {unknown[0]!r}", unknown[0])
    if "recipients" not in document:
        raise imports.ImportRejected(422, "validation_error", "recipients is required", "recipients")
    return document["recipients"]


def _action_route(action: str, summary: str):
    return app.post(
        f"/campaigns/<id>/{action}",
        summary=summary,
        responses={**_ok(200, RetryOut if action == "retry-failed" else CampaignOut, "the campaign"),
                   **_errors(404, 409, 422)},
        tags=["campaigns"],
    )


@_action_route("send", "Start sending (draft or scheduled → sending); sender batches start at once")
def send(id: str):
    service.send(_campaign_id(id), settings())
    status = views.campaign_status(id, settings())
    return edge.json_answer(200, {**status, "fits_now": numbers.fits_now(status["phone_number_id"],
                                                                         status["counts"]["pending"])})


@_action_route("pause", "Pause a sending campaign (batches stop at their next heartbeat)")
def pause(id: str):
    service.pause(_campaign_id(id))
    return edge.json_answer(200, views.campaign_status(id, settings()))


@_action_route("resume", "Resume a paused campaign; its open shards start again at once")
def resume(id: str):
    service.resume(_campaign_id(id), settings())
    return edge.json_answer(200, views.campaign_status(id, settings()))


@_action_route("cancel", "Cancel a campaign for good (recipients not sent yet stay pending)")
def cancel(id: str):
    service.cancel(_campaign_id(id))
    return edge.json_answer(200, views.campaign_status(id, settings()))


@_action_route("retry-failed", "Send again to recipients that failed with a retryable error")
def retry_failed(id: str):
    reopened = service.retry_failed(_campaign_id(id), settings())
    return edge.json_answer(200, {**views.campaign_status(id, settings()), "reopened_shards": reopened})


# -- test sends and clones (campaigns.test_sends, campaigns.clones) ----------------------------------------


@app.post(
    "/campaigns/<id>/test",
    summary="Send the campaign's template now to up to 10 numbers (draft, scheduled or paused)",
    description="Each number is sent to as a send of the campaign would be (the same payload, token and "
    "endpoint), synchronously and without retries; the answer gives each one's wamid or the Graph error and "
    "its class. The campaign's recipients, counts and status are not touched, and the status webhooks of a "
    "test send change nothing. A number on the suppression list is not sent to (class `suppressed`).",
    responses={**_ok(200, SendTestOut, "one result per number"), **_errors(400, 404, 409, 422)},
    tags=["campaigns"],
)
def send_test(id: str, body: Annotated[SendTestIn, Body()]):
    results = test_sends.send_tests(_campaign_id(id), [r.model_dump() for r in body.recipients], settings())
    return edge.json_answer(200, {"results": results})


@app.post(
    "/campaigns/<id>/clone",
    status_code=201,
    summary="A new draft with the campaign's template and settings, and optionally its recipients by outcome",
    description="`recipients`: none (default), all, failed, not_delivered or not_read (docs/api.md). They go "
    "through the import (duplicates and suppressed numbers dropped, the answer's `import` report). Not copied: "
    "send_at; expires_at only if still in the future.",
    responses={**_ok(201, ClonedCampaign, "the new campaign"), **_errors(400, 404, 413, 422)},
    tags=["campaigns"],
)
def clone_campaign(id: str, body: Annotated[CloneIn | None, Body()] = None):
    body = body or CloneIn()
    campaign_id, report = clones.clone(_campaign_id(id), body.name, body.recipients, settings())
    answer = {**views.campaign_status(campaign_id, settings()), "cloned_from": id}
    if report is not None:
        answer["import"] = report
    return edge.json_answer(201, answer, {"Location": f"/campaigns/{campaign_id}"})


@app.get(
    "/campaigns/<id>",
    summary="A campaign's status, counts, progress, rate and ETA",
    responses={**_ok(200, CampaignOut, "the campaign"), **_errors(404, 422)},
    tags=["campaigns"],
)
def get_campaign(id: str):
    return edge.json_answer(200, views.campaign_status(_campaign_id(id), settings()))


@app.get(
    "/campaigns",
    summary="Campaigns, newest first",
    description="Pages of at most `limit`; pass the answer's `next` for the following page. With `status`, "
    "a page may hold fewer than `limit` campaigns while `next` is not null.",
    responses={**_ok(200, CampaignPage, "a page of campaigns"), **_errors(422)},
    tags=["campaigns"],
)
def list_campaigns(
    status: Annotated[CampaignStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next: Annotated[str | None, Query(max_length=4096)] = None,
):
    items, token = views.list_campaigns(status.value if status else None, limit, next)
    return edge.json_answer(200, {"items": items, "next": token})


@app.get(
    "/campaigns/<id>/recipients",
    summary="A campaign's recipients (optionally by status), with their Graph error codes",
    description="Shard by shard in send order; pass `next` for the following page.",
    responses={**_ok(200, RecipientPage, "a page of recipients"), **_errors(404, 422)},
    tags=["recipients"],
)
def list_recipients(
    id: str,
    status: Annotated[RecipientStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    next: Annotated[str | None, Query(max_length=4096)] = None,
):
    items, token = views.list_recipients(_campaign_id(id), status, limit, next)
    return edge.json_answer(200, {"items": items, "next": token})


@app.get(
    "/campaigns/<id>/events",
    summary="A campaign's history: every start, pause, resume, wait and completion, with its cause and time",
    description="Oldest first (`order=newest`: the newest first); pass `next` for the following page.",
    responses={**_ok(200, EventPage, "a page of events"), **_errors(404, 422)},
    tags=["campaigns"],
)
def list_events(
    id: str,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    next: Annotated[str | None, Query(max_length=4096)] = None,
    order: Annotated[Literal["oldest", "newest"], Query()] = "oldest",
):
    views.get_campaign(_campaign_id(id))  # 404 for an unknown campaign
    items, token = history.events(id, limit, next, newest_first=order == "newest")
    return edge.json_answer(200, {"items": items, "next": token})


# -- the CSV export (campaigns.export; docs/api.md, "Export") -------------------------------------------


@app.get(
    "/campaigns/<id>/recipients.csv",
    summary="A campaign's recipients as CSV (optionally by status), in pages that fit the response limits",
    description="A header line `" + ",".join(export.COLUMNS) + "`, then one line per recipient, shard by "
    "shard in send order (moments ISO 8601 UTC). At most `limit` rows (and 4 MiB) a page: while there is "
    "more, the answer has `Link: <recipients.csv?...&next=CURSOR>; rel=\"next\"` (relative to the request's "
    "URL) and `X-Next-Cursor`; the last page has neither. A page may hold fewer rows, even none, while "
    "there is more. An `error_message` that begins with = + - @ is written with a ' before it.",
    responses={200: {"description": "a page of the export, a complete CSV",
                     "content": {"text/csv": {"schema": {"type": "string"}}}},
               **_errors(404, 422)},
    tags=["recipients"],
)
def export_recipients(
    id: str,
    status: Annotated[RecipientStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=export.MAX_ROWS)] = export.MAX_ROWS,
    next: Annotated[str | None, Query(max_length=4096)] = None,
):
    found = export.page(_campaign_id(id), status, limit, next)
    headers = {"Content-Disposition": f'attachment; filename="{id}-recipients.csv"'}
    if found.next:
        query = {**({"status": status.value} if status else {}),
                 **({"limit": limit} if limit != export.MAX_ROWS else {}), "next": found.next}
        headers["Link"] = f'<recipients.csv?{urlencode(query)}>; rel="next"'
        headers["X-Next-Cursor"] = found.next
    return Response(status_code=200, content_type=export.MEDIA_TYPE, body=found.body, headers=headers)


def _document_export(schema: dict) -> None:
    """The export's answer headers (the resolver documents only bodies)."""
    answer = schema["paths"]["/campaigns/{id}/recipients.csv"]["get"]["responses"]["200"]
    answer["headers"] = {
        "Link": {"description": "the next page, `<recipients.csv?...&next=CURSOR>; rel=\"next\"` (RFC 8288), "
                                "relative to the request's URL; absent on the last page",
                 "schema": {"type": "string"}},
        "X-Next-Cursor": {"description": "the next page's `next`; absent on the last page",
                          "schema": {"type": "string"}},
    }
    answer["content"]["text/csv"]["example"] = (
        ",".join(export.COLUMNS) + "\r\n919876543210,sent,,,2026-11-28T18:54:13.556+00:00,"
        "2026-11-28T18:54:14.102+00:00,\r\n919876543211,failed,131026,Message undeliverable,,,\r\n")


_PHONE_NUMBER_ID = re.compile(r"^[0-9]{1,32}$")


def _phone_number_id(value: str) -> str:
    if not _PHONE_NUMBER_ID.match(value):
        raise service.Unprocessable("phone_number_id must be 1-32 digits", field="phone_number_id")
    return value


@app.put(
    "/numbers/<phone_number_id>",
    summary="Set a number's throughput limit, shared by every campaign sending from it",
    responses={**_ok(200, NumberOut, "the number"), **_errors(400, 422)},
    tags=["numbers"],
)
def put_number(phone_number_id: str, body: Annotated[NumberIn, Body()]):
    return edge.json_answer(200, numbers.configure(_phone_number_id(phone_number_id), body.throughput_mps,
                                                   body.messaging_limit, body.portfolio, body.secret,
                                                   body.business_account_id))


@app.get(
    "/numbers/<phone_number_id>",
    summary="A number's limit, and the share each shard sending from it has now",
    responses={**_ok(200, NumberOut, "the number"), **_errors(422)},
    tags=["numbers"],
)
def get_number(phone_number_id: str):
    return edge.json_answer(200, numbers.number_view(_phone_number_id(phone_number_id)))


@app.get(
    "/numbers",
    summary="The numbers configured, each with its limits and who sends from it now",
    responses={**_ok(200, NumberList, "the numbers"), **_errors(422)},
    tags=["numbers"],
)
def list_numbers():
    return edge.json_answer(200, {"items": numbers.list_numbers()})


def _phone(value: str) -> str:
    """The path's number as E.164 digits (`919876543210`; `+91...` and separators are fine too)."""
    try:
        return phones.normalize(unquote(value))
    except phones.InvalidPhone as why:
        raise service.Unprocessable(str(why), field="phone") from None


@app.get(
    "/suppressions",
    summary="The suppression list (numbers never sent to again), newest first",
    description="Numbers that replied an opt-out keyword, that Meta refused with 131050, or that a person put "
    "on it. Pages of at most `limit`; pass the answer's `next` for the following page.",
    responses={**_ok(200, SuppressionPage, "a page of suppressed numbers"), **_errors(422)},
    tags=["suppressions"],
)
def list_suppressions(
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    next: Annotated[str | None, Query(max_length=4096)] = None,
):
    items, token = views.list_suppressions(limit, next)
    return edge.json_answer(200, {"items": items, "next": token})


@app.put(
    "/suppressions/<phone>",
    summary="Put a number on the suppression list; its pending recipients in campaigns not finished are skipped",
    description="201 when the number was not on the list, 200 (the item as it was) when it already was; "
    "either way its pending recipients in draft, scheduled, sending and paused campaigns are skipped.",
    responses={**_ok(200, SuppressionAdded, "already on the list"), **_ok(201, SuppressionAdded, "added"),
               **_errors(400, 422)},
    tags=["suppressions"],
)
def put_suppression(phone: str, body: Annotated[SuppressionIn | None, Body()] = None):
    number = _phone(phone)
    added, skipped = suppressions.suppress(number, suppressions.person_reason(body.reason if body else None),
                                           suppressions.SOURCE_PERSON)
    item = suppressions.find(number)
    return edge.json_answer(201 if added else 200, {**suppressions.view(item), "skipped_recipients": skipped})


@app.get(
    "/suppressions/<phone>",
    summary="One number of the suppression list",
    responses={**_ok(200, SuppressionOut, "the number is suppressed"),
               **_errors(404, 422, not_found="the number is not on the list")},
    tags=["suppressions"],
)
def get_suppression(phone: str):
    item = suppressions.find(_phone(phone))
    if item is None:
        raise service.NotFound(f"{phone[:32]} is not on the suppression list", field="phone")
    return edge.json_answer(200, suppressions.view(item))


@app.delete(
    "/suppressions/<phone>",
    summary="Take a number off the suppression list (recipients it skipped stay skipped)",
    responses={204: {"description": "taken off the list"},
               **_errors(404, 422, not_found="the number is not on the list")},
    tags=["suppressions"],
)
def delete_suppression(phone: str):
    if not suppressions.remove(_phone(phone)):
        raise service.NotFound(f"{phone[:32]} is not on the suppression list", field="phone")
    return Response(status_code=204, body="")


@app.get("/openapi.json", include_in_schema=False)
def get_openapi():
    return edge.json_answer(200, openapi_schema())


def openapi_schema() -> dict:
    """The schema of these routes; the import route's two body types are added by hand (the route
    parses its body itself, as JSON or CSV, so the resolver cannot see it)."""
    schema = json.loads(app.get_openapi_json_schema(
        title=API_TITLE,
        version=API_VERSION,
        description="Crash-proof WhatsApp template campaigns. Errors: `{\"error\": {\"code\", \"message\", "
        "\"field\"}}`. See docs/api.md.",
    ))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request = ImportRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(request.pop("$defs", {}))
    components["ImportRequest"] = request
    operation = schema["paths"]["/campaigns/{id}/recipients"]["post"]
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ImportRequest"}},
            "text/csv": {"schema": {"type": "string",
                                    "example": "phone,var1,var2\r\n+919876543210,Asha,20%\r\n"}},
        },
    }
    _document_export(schema)
    # Powertools adds its own validation-error schemas; every 4xx here answers ErrorOut instead.
    theirs = ("HTTPValidationError", "ValidationError", "ResponseValidationError")
    used = json.dumps([schema["paths"], {k: v for k, v in components.items() if k not in theirs}])
    for name in theirs:
        if f'"#/components/schemas/{name}"' not in used:
            components.pop(name, None)
    return schema


# -- the handler -----------------------------------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)  # answers hold phone numbers: keep them out of traces
# No @metrics.log_metrics: the API emits no metrics of its own (API Gateway's cover requests,
# latency and errors), and an empty flush warns on every request.
def lambda_handler(event, context):
    limit = settings().max_import_bytes
    if edge.body_size(event) > limit:
        return edge.too_large(limit)  # before anything parses it: it cannot wait for routing
    _idempotency()[0].register_lambda_context(context)
    return app.resolve(event, context)

