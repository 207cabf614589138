"""The HTTP API, called in-process with API Gateway REST proxy events, against the local stack
(moto as DynamoDB, the fake Graph API, the local Lambda runtime running real sender processes)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import boto3
import pytest

from campaigns import achieved, imports, ledger, service, suppressions, views
from campaigns.config import settings
from campaigns.models import Campaign, Recipient, Shard, recipient_sk, shard_pk
from functions.api.app import lambda_handler, openapi_schema
from local.lambda_process import LambdaContext
from tests.helpers import captured_logs, wait_until

TEMPLATE = {
    "name": "diwali_offer",
    "language": "en_US",
    "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}, {"type": "text", "text": "{{2}}"}]}],
}


# -- calling the API like API Gateway does -------------------------------------------------------------


def api_event(method: str, path: str, body=None, headers: dict | None = None, query: dict | None = None,
              base64_encoded: bool = False) -> dict:
    """A REST API (v1) proxy event, as API Gateway hands it to the function."""
    if body is not None and not isinstance(body, str | bytes):
        body = json.dumps(body)
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if base64_encoded else body.decode()
    all_headers = {"Content-Type": "application/json"} if body is not None else {}
    all_headers.update(headers or {})
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path, "httpMethod": method, "path": f"/dev{path}", "stage": "dev",
            "requestId": str(uuid.uuid4()), "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def lambda_context() -> LambdaContext:
    return LambdaContext(
        aws_request_id=str(uuid.uuid4()), function_name="api", function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:api", memory_limit_in_mb="512",
        log_group_name="/aws/lambda/api", log_stream_name="local", deadline_ms=int(time.time() * 1000) + 29_000,
    )


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict

    @property
    def error(self) -> dict:
        return self.body["error"]


def call(method: str, path: str, body=None, headers: dict | None = None, query: dict | None = None,
         base64_encoded: bool = False) -> Answer:
    result = lambda_handler(api_event(method, path, body, headers, query, base64_encoded), lambda_context())
    found = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    found.update({k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()})
    return Answer(result["statusCode"], json.loads(result["body"]) if result["body"] else {}, found)


# -- fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture
def stack(make_stack):
    return make_stack(with_scheduler=False)


def campaign_body(**changes) -> dict:
    return {"name": "Diwali", "phone_number_id": "1234567890", "template": TEMPLATE, **changes}


def create(**changes) -> dict:
    answer = call("POST", "/campaigns", campaign_body(**changes))
    assert answer.status == 201, answer.body
    return answer.body


def phone(n: int) -> str:
    return f"+91 98765 {n:05d}"


def digits(n: int) -> str:
    return f"9198765{n:05d}"


def rows(*numbers: int) -> list[dict]:
    return [{"phone": phone(n), "variables": [f"name{n}", "20%"]} for n in numbers]


def table_items() -> list[dict]:
    client = boto3.client("dynamodb")
    return client.scan(TableName=settings().table_name)["Items"]


def stored(campaign_id: str) -> list[Recipient]:
    campaign = views.get_campaign(campaign_id)
    found = []
    for shard in range(int(campaign.shard_count)):
        found += list(Recipient.query(shard_pk(campaign_id, shard), Recipient.SK.startswith("R#"),
                                      consistent_read=True))
    return found


# The one form of a moment in answers: ISO 8601, UTC, milliseconds.
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def epoch_of(moment: str) -> float:
    assert ISO_UTC.match(moment), moment
    return datetime.fromisoformat(moment).timestamp()


def assert_error(answer: Answer, status: int, code: str | None = None, field: str | None = None) -> None:
    assert answer.status == status, answer.body
    assert set(answer.error) >= {"code", "message", "field"}
    if code is not None:
        assert answer.error["code"] == code, answer.error
    if field is not None:
        assert answer.error["field"] == field, answer.error


# -- POST /campaigns --------------------------------------------------------------------------------------


def test_create_draft(stack):
    answer = call("POST", "/campaigns", campaign_body())
    assert answer.status == 201
    body = answer.body
    assert body["status"] == "draft"
    assert answer.headers["location"] == f"/campaigns/{body['id']}"
    assert body["rate"] == 80 and body["in_doubt_policy"] == "auto" and body["total"] == 0
    assert set(body["counts"]) == {"pending", "sending", "sent", "delivered", "read", "failed", "in_doubt",
                                   "skipped", "expired"}
    assert call("GET", f"/campaigns/{body['id']}").body["status"] == "draft"


@pytest.mark.parametrize("send_at", ["iso", "epoch"])
def test_create_scheduled(stack, send_at):
    at = time.time() + 3600
    value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if send_at == "iso" else int(at)
    body = create(send_at=value)
    assert body["status"] == "scheduled"
    assert epoch_of(body["send_at"]) == pytest.approx(int(at), abs=1)
    # Recovery finds it through the due index.
    campaign = views.get_campaign(body["id"])
    assert campaign.due_kind == "campaign" and campaign.due_at == pytest.approx(int(at), abs=1)


def test_create_with_inline_recipients_then_schedule(stack):
    at = time.time() + 600
    body = create(recipients=rows(1, 2, 2, 3), send_at=at, rate=200)
    assert body["status"] == "scheduled"
    assert body["import"]["accepted"] == 3 and body["import"]["duplicates"] == 1
    assert body["total"] == 3 and body["shards"] == 3
    assert sorted(r.phone for r in stored(body["id"])) == [digits(1), digits(2), digits(3)]


def test_inline_recipients_are_all_valid_or_nothing_is_written(stack):
    answer = call("POST", "/campaigns", campaign_body(recipients=[*rows(1, 2, 3), {"phone": "12345", "variables":
                                                                                  ["a", "b"]}]))
    assert_error(answer, 422, "validation_error", "recipients[3].phone")
    assert answer.body["rejected"] == [{"index": 3, "phone": "12345", "reason": answer.body["rejected"][0]["reason"]}]
    assert table_items() == []

    answer = call("POST", "/campaigns", campaign_body(recipients=[{"phone": phone(1), "variables": ["only one"]}]))
    assert_error(answer, 422, "validation_error", "recipients[0].variables")
    assert table_items() == []


BAD_CREATES = [
    ("malformed JSON", '{"name": "x",', 400, "malformed_json", "body"),
    ("not an object", "[1, 2]", 422, "validation_error", "body"),
    ("empty body", "", 422, "validation_error", "body"),
    ("missing name", {k: v for k, v in campaign_body().items() if k != "name"}, 422, "validation_error", "name"),
    ("empty name", campaign_body(name=""), 422, "validation_error", "name"),
    ("missing template name", campaign_body(template={"language": "en_US"}), 422, "validation_error",
     "template.name"),
    ("template name with capitals", campaign_body(template={**TEMPLATE, "name": "Diwali Offer"}), 422,
     "validation_error", "template.name"),
    ("bad language", campaign_body(template={**TEMPLATE, "language": "english"}), 422, "validation_error",
     "template.language"),
    ("placeholder gap", campaign_body(template={**TEMPLATE, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "{{1}} {{3}}"}]}]}), 422, "validation_error",
     "template.components"),
    ("named placeholder", campaign_body(template={**TEMPLATE, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "{{name}}"}]}]}), 422, "validation_error",
     "template.components"),
    ("letters in phone_number_id", campaign_body(phone_number_id="abc"), 422, "validation_error",
     "phone_number_id"),
    ("rate 0", campaign_body(rate=0), 422, "validation_error", "rate"),
    ("rate too high", campaign_body(rate=5000), 422, "validation_error", "rate"),
    ("rate not a number", campaign_body(rate="fast"), 422, "validation_error", "rate"),
    ("unknown policy", campaign_body(in_doubt_policy="maybe"), 422, "validation_error", "in_doubt_policy"),
    ("send_at in the past", campaign_body(send_at="2020-01-01T00:00:00Z"), 422, "validation_error", "send_at"),
    ("send_at epoch in the past", campaign_body(send_at=1_000_000), 422, "validation_error", "send_at"),
    ("send_at without a zone", campaign_body(send_at="2099-01-01T09:00:00"), 422, "validation_error", "send_at"),
    ("send_at not a time", campaign_body(send_at="tomorrow"), 422, "validation_error", "send_at"),
    ("expires_at in the past", campaign_body(expires_at="2020-01-01T00:00:00Z"), 422, "validation_error",
     "expires_at"),
    ("expires_at without a zone", campaign_body(expires_at="2099-01-01T09:00:00"), 422, "validation_error",
     "expires_at"),
    ("expires_at before send_at", campaign_body(send_at=time.time() + 7200, expires_at=time.time() + 3600),
     422, "validation_error", "expires_at"),
    ("unknown field", campaign_body(sendAt="2099-01-01T09:00:00Z"), 422, "validation_error", "sendAt"),
    ("recipient phone not a string", campaign_body(recipients=[{"phone": 919876543210, "variables": ["a", "b"]}]),
     422, "validation_error", "recipients[0].phone"),
    ("recipient bad E.164", campaign_body(recipients=rows(1) + [{"phone": "+91 98765", "variables": ["a", "b"]}]),
     422, "validation_error", "recipients[1].phone"),
]


@pytest.mark.parametrize(("why", "body", "status", "code", "field"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_create_rejects_bad_input_and_writes_nothing(stack, why, body, status, code, field):
    answer = call("POST", "/campaigns", body)
    assert_error(answer, status, code, field)
    assert table_items() == []


def test_create_names_every_invalid_field(stack):
    answer = call("POST", "/campaigns", campaign_body(rate=0, in_doubt_policy="x"))
    assert answer.status == 422
    assert {d["field"] for d in answer.body["details"]} == {"rate", "in_doubt_policy"}


def test_create_refuses_csv(stack):
    answer = call("POST", "/campaigns", "name\nx\n", headers={"Content-Type": "text/csv"})
    assert_error(answer, 415, "unsupported_media_type")
    assert table_items() == []


def test_idempotency_key_replays_the_same_campaign(stack):
    key = {"Idempotency-Key": "create-7f3a"}
    first = call("POST", "/campaigns", campaign_body(recipients=rows(1, 2)), headers=key)
    again = call("POST", "/campaigns", campaign_body(recipients=rows(1, 2)), headers=key)
    assert first.status == again.status == 201
    assert again.body["id"] == first.body["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.body["import"] == first.body["import"]
    assert len(call("GET", "/campaigns").body["items"]) == 1
    assert len(stored(first.body["id"])) == 2

    other = call("POST", "/campaigns", campaign_body(name="another"), headers=key)
    assert_error(other, 422, "idempotency_key_reused", "Idempotency-Key")
    assert len(call("GET", "/campaigns").body["items"]) == 1

    fresh = call("POST", "/campaigns", campaign_body(), headers={"Idempotency-Key": "create-7f3b"})
    assert fresh.status == 201 and fresh.body["id"] != first.body["id"]


def test_idempotency_key_of_a_refused_request_is_free_again(stack):
    key = {"Idempotency-Key": "k-1"}
    past = call("POST", "/campaigns", campaign_body(send_at=int(time.time()) - 10), headers=key)
    assert_error(past, 422, "validation_error", "send_at")
    ok = call("POST", "/campaigns", campaign_body(), headers=key)
    assert ok.status == 201


def test_idempotency_key_must_be_printable(stack):
    answer = call("POST", "/campaigns", campaign_body(), headers={"Idempotency-Key": "x" * 300})
    assert_error(answer, 422, "validation_error")
    assert table_items() == []


# -- POST /campaigns/{id}/recipients ------------------------------------------------------------------------


def test_import_json_normalises_and_dedupes(stack):
    campaign = create()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": [
        {"phone": "+91 98765 00001", "variables": ["Asha", "20%"]},
        {"phone": "0091-98765-00002", "variables": [" Ravi ", "10%"]},
        {"phone": "(91) 98765.00003", "variables": ["Meera", "5%"]},
        {"phone": "919876500001", "variables": ["Asha again", "20%"]},
        {"phone": "+91 98765", "variables": ["short", "1%"]},
        {"phone": "091 98765 00004", "variables": ["zero", "1%"]},
        {"phone": "+91 98765 0000x", "variables": ["letter", "1%"]},
        {"phone": "+91 98765 00005", "variables": ["one"]},
        {"phone": "+91 98765 00006", "variables": ["", "1%"]},
        {"phone": "+91 98765 00007", "variables": ["two\nlines", "1%"]},
        {"variables": ["no phone", "1%"]},
        "not an object",
    ]})
    assert answer.status == 200, answer.body
    report = answer.body
    assert report["accepted"] == 3 and report["duplicates"] == 1 and report["suppressed"] == 0
    assert report["total"] == 3
    assert [r["index"] for r in report["rejected"]] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert report["rejected_count"] == 8
    assert report["rejected"][0]["phone"] == "+91 98765"
    assert "digits" in report["rejected"][0]["reason"]
    assert "country code" in report["rejected"][1]["reason"]
    assert "expected 2 variables" in report["rejected"][3]["reason"]
    recipients = {r.phone: list(r.variables) for r in stored(campaign["id"])}
    assert recipients == {digits(1): ["Asha", "20%"], digits(2): ["Ravi", "10%"], digits(3): ["Meera", "5%"]}


def test_import_csv_with_bom_crlf_quotes_and_line_numbers(stack):
    campaign = create()
    csv_text = (
        "\ufeffPhone,name,discount\r\n"
        "+91 98765 00001,Asha,20%\r\n"
        "\r\n"
        '"+91 98765 00002","Ravi, Jr.","10%"\r\n'
        "12345,Short,1%\r\n"
        "+91 98765 00003,OnlyOne\r\n"
        '+91 98765 00004,"multi\r\nline",1%\r\n'
        "+91 98765 00005,Last,5%,\r\n"
        "+91 98765 00001,Dup,1%\r\n"
    )
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", csv_text.encode(),
                  headers={"Content-Type": "text/csv; charset=utf-8"})
    assert answer.status == 200, answer.body
    report = answer.body
    assert report["accepted"] == 3 and report["duplicates"] == 1
    assert [(r["line"], r["phone"]) for r in report["rejected"]] == [
        (5, "12345"), (6, "+91 98765 00003"), (7, "+91 98765 00004")]
    recipients = {r.phone: list(r.variables) for r in stored(campaign["id"])}
    assert recipients == {digits(1): ["Asha", "20%"], digits(2): ["Ravi, Jr.", "10%"], digits(5): ["Last", "5%"]}


def test_import_csv_base64_encoded(stack):
    campaign = create()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", b"phone,a,b\n+919876500001,x,y\n",
                  headers={"Content-Type": "text/csv"}, base64_encoded=True)
    assert answer.status == 200 and answer.body["accepted"] == 1


BAD_CSVS = [
    ("empty", b"", 422, "empty"),
    ("blank lines", b"\r\n \r\n", 422, "empty"),
    ("header only", b"phone,name,discount\r\n", 422, "empty"),
    ("no header", b"+919876500001,Asha,20%\n", 422, "invalid_csv"),
    ("header with too few columns", b"phone,name\n+919876500001,Asha\n", 422, "invalid_csv"),
    ("not UTF-8", "phone,a,b\n+919876500001,Jos\u00e9,1\n".encode("latin-1"), 422, "invalid_csv"),
    ("broken quoting", b'phone,a,b\n+919876500001,"Asha,1\n', 422, "invalid_csv"),
]


@pytest.mark.parametrize(("why", "data", "status", "code"), BAD_CSVS, ids=[c[0] for c in BAD_CSVS])
def test_import_rejects_bad_csv_and_writes_nothing(stack, why, data, status, code):
    campaign = create()
    before = table_items()
    # Bytes that are not UTF-8 reach a function only base64-encoded (API Gateway's binary media types).
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", data, headers={"Content-Type": "text/csv"},
                  base64_encoded=why == "not UTF-8")
    assert_error(answer, status, code, "body")
    assert table_items() == before


def test_import_with_only_bad_rows_is_422_with_the_report(stack):
    campaign = create()
    before = table_items()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients",
                  b"phone,a,b\n12,x,y\n+91 98765 00001,only\n", headers={"Content-Type": "text/csv"})
    assert_error(answer, 422, "no_valid_rows", "line 2")
    assert [r["line"] for r in answer.body["rejected"]] == [2, 3]
    assert answer.body["accepted"] == 0 and answer.body["total"] == 0
    assert table_items() == before


BAD_JSON_IMPORTS = [
    ("malformed JSON", '{"recipients": [', 400, "malformed_json", "body"),
    ("not an object", "[]", 422, "validation_error", "body"),
    ("missing recipients", {"people": []}, 422, "validation_error", "people"),
    ("recipients missing", {}, 422, "validation_error", "recipients"),
    ("recipients not a list", {"recipients": {"phone": "+919876500001"}}, 422, "validation_error", "recipients"),
    ("recipients empty", {"recipients": []}, 422, "empty", "recipients"),
    ("every row bad", {"recipients": [{"phone": "+91 98765", "variables": ["a", "b"]}]}, 422,
     "no_valid_rows", "recipients[0].phone"),
    ("unknown field in a row", {"recipients": [{"phone": phone(1), "vars": ["a", "b"]}]}, 422, "no_valid_rows",
     "recipients[0].vars"),
]


@pytest.mark.parametrize(("why", "body", "status", "code", "field"), BAD_JSON_IMPORTS,
                         ids=[c[0] for c in BAD_JSON_IMPORTS])
def test_import_rejects_bad_json_and_writes_nothing(stack, why, body, status, code, field):
    campaign = create()
    before = table_items()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", body)
    assert_error(answer, status, code, field)
    assert table_items() == before


def test_import_refuses_other_media_types(stack):
    campaign = create()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", "<x/>", headers={"Content-Type": "text/xml"})
    assert_error(answer, 415, "unsupported_media_type", "Content-Type")


def test_import_of_an_oversize_body_is_413_and_writes_nothing(stack):
    campaign = create()
    before = table_items()
    line = "+919876500001,Asha,20%\n"
    data = "phone,a,b\n" + line * (settings().max_import_bytes // len(line) + 1)
    assert len(data) > settings().max_import_bytes
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", data, headers={"Content-Type": "text/csv"})
    assert_error(answer, 413, "payload_too_large", "body")
    assert table_items() == before
    # The same limit holds for a base64-encoded body and for POST /campaigns.
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", data.encode(),
                  headers={"Content-Type": "text/csv"}, base64_encoded=True)
    assert_error(answer, 413, "payload_too_large")
    answer = call("POST", "/campaigns", campaign_body(name="x" * settings().max_import_bytes))
    assert_error(answer, 413, "payload_too_large")
    assert table_items() == before


def test_import_of_too_many_rows_is_413(stack, set_env):
    set_env(MAX_IMPORT_ROWS="3")
    campaign = create()
    before = table_items()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1, 2, 3, 4)})
    assert_error(answer, 413, "too_many_rows", "recipients")
    csv_text = "phone,a,b\n" + "".join(f"{phone(n)},x,y\n" for n in range(4))
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", csv_text, headers={"Content-Type": "text/csv"})
    assert_error(answer, 413, "too_many_rows")
    assert table_items() == before


def test_import_drops_numbers_already_in_the_campaign(stack):
    campaign = create()
    first = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1, 2, 3)})
    assert first.body["accepted"] == 3
    again = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(2, 3, 4)})
    assert again.status == 200
    assert again.body["accepted"] == 1 and again.body["duplicates"] == 2 and again.body["total"] == 4
    # The very same list once more: nothing new, and that is not an error.
    same = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1, 2, 3, 4)})
    assert same.status == 200 and same.body["accepted"] == 0 and same.body["duplicates"] == 4
    assert sorted(r.phone for r in stored(campaign["id"])) == [digits(n) for n in (1, 2, 3, 4)]
    assert call("GET", f"/campaigns/{campaign['id']}").body["total"] == 4


def test_import_drops_suppressed_numbers(stack):
    suppressions.suppress(digits(2), suppressions.graph_reason(131050), suppressions.SOURCE_GRAPH)
    campaign = create()
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1, 2, 3)})
    assert answer.body["accepted"] == 2 and answer.body["suppressed"] == 1
    assert digits(2) not in {r.phone for r in stored(campaign["id"])}


def test_numbers_of_an_import_that_died_half_way_can_be_imported_again(stack):
    """Recipients and number books written, commit never reached: they do not exist for anyone."""
    campaign = create()

    def die(import_id, positions):
        imports.write_books(campaign["id"], import_id, positions)
        raise RuntimeError("killed before the commit")

    with pytest.raises(RuntimeError):
        service.add_recipients(campaign["id"], [service.RecipientRow(digits(n), ["a", "b"]) for n in (1, 2)],
                               placed=die)
    assert call("GET", f"/campaigns/{campaign['id']}/recipients").body["items"] == []
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1, 2)})
    assert answer.body["accepted"] == 2 and answer.body["duplicates"] == 0 and answer.body["total"] == 2
    listed = call("GET", f"/campaigns/{campaign['id']}/recipients").body["items"]
    assert sorted(r["phone"] for r in listed) == [digits(1), digits(2)]


def test_a_second_import_while_one_runs_is_409_and_writes_nothing(stack):
    campaign = create()
    before = table_items()
    with imports.import_lock(campaign["id"]):
        answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1)})
        assert_error(answer, 409, "import_in_progress")
        assert [i for i in table_items() if "IMPORT_LOCK" not in i["SK"]["S"]] == before
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1)})
    assert answer.status == 200 and answer.body["accepted"] == 1


def test_import_only_while_draft_or_scheduled(stack):
    campaign = create()
    assert call("POST", f"/campaigns/{campaign['id']}/cancel").status == 200
    answer = call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1)})
    assert_error(answer, 409, "conflict", "status")
    assert answer.error["current_status"] == "cancelled"
    assert stored(campaign["id"]) == []

    scheduled = create(send_at=time.time() + 3600)
    answer = call("POST", f"/campaigns/{scheduled['id']}/recipients", {"recipients": rows(1)})
    assert answer.status == 200 and answer.body["accepted"] == 1


@pytest.mark.parametrize("campaign_id", ["0123456789abcdef", "no#such", "x" * 3000])
def test_import_into_an_unknown_campaign_is_404(stack, campaign_id):
    answer = call("POST", f"/campaigns/{campaign_id}/recipients", {"recipients": rows(1)})
    assert_error(answer, 404, "not_found")
    assert table_items() == []


def test_phone_numbers_never_reach_the_logs(stack):
    with captured_logs() as logs:
        campaign = create()
        call("POST", f"/campaigns/{campaign['id']}/recipients", {"recipients": rows(1, 2) + [
            {"phone": "+91 98765 00009", "variables": ["x"]}]})
        call("GET", f"/campaigns/{campaign['id']}/recipients")
    logged = logs.getvalue()
    assert "recipients imported" in logged  # the logs were captured at all
    for n in (1, 2, 9):
        assert digits(n) not in logged and phone(n) not in logged and digits(n)[2:] not in logged


# -- send / pause / resume / cancel / retry-failed ------------------------------------------------------------


def test_send_runs_the_campaign_to_completion(stack):
    campaign = create(recipients=rows(*range(6)))
    answer = call("POST", f"/campaigns/{campaign['id']}/send")
    assert answer.status == 200 and answer.body["status"] in ("sending", "completed")
    assert answer.body["fits_now"] is None  # its number has no messaging limit
    done = wait_until(lambda: (s := call("GET", f"/campaigns/{campaign['id']}").body)["status"] == "completed" and s,
                      timeout=60, what="the campaign to complete")
    assert done["counts"]["sent"] == 6 and done["counts"]["pending"] == 0 and done["progress"] == 1.0
    assert sorted(s["to"] for s in stack.fake.sends()) == sorted(digits(n) for n in range(6))
    listed = call("GET", f"/campaigns/{campaign['id']}/recipients", query={"status": "sent"}).body["items"]
    assert len(listed) == 6 and all(r["wamid"] for r in listed)


def test_send_without_recipients_is_refused(stack):
    campaign = create()
    answer = call("POST", f"/campaigns/{campaign['id']}/send")
    assert_error(answer, 400, field="recipients")
    assert call("GET", f"/campaigns/{campaign['id']}").body["status"] == "draft"


@pytest.mark.parametrize(("action", "status"), [("pause", "draft"), ("resume", "draft"), ("retry-failed", "draft"),
                                                ("send", "cancelled"), ("resume", "cancelled"),
                                                ("cancel", "cancelled"), ("pause", "cancelled")])
def test_illegal_transitions_are_409_with_the_current_status(stack, action, status):
    campaign = create(recipients=rows(1))
    if status == "cancelled":
        assert call("POST", f"/campaigns/{campaign['id']}/cancel").status == 200
    answer = call("POST", f"/campaigns/{campaign['id']}/{action}")
    assert_error(answer, 409, "conflict", "status")
    assert answer.error["current_status"] == status
    assert call("GET", f"/campaigns/{campaign['id']}").body["status"] == status
    assert stack.fake.sends() == []


@pytest.mark.parametrize("action", ["send", "pause", "resume", "cancel", "retry-failed"])
def test_actions_on_an_unknown_campaign_are_404(stack, action):
    assert_error(call("POST", f"/campaigns/0123456789abcdef/{action}"), 404, "not_found")
    assert_error(call("POST", f"/campaigns/bad%23id/{action}"), 404, "not_found")


def test_pause_resume_and_cancel(stack):
    campaign = create(recipients=rows(*range(40)), rate=1)
    cid = campaign["id"]
    assert call("POST", f"/campaigns/{cid}/send").body["status"] == "sending"
    paused = call("POST", f"/campaigns/{cid}/pause")
    assert paused.status == 200 and paused.body["status"] == "paused"
    assert paused.body["paused_reason"] == "paused by request"
    resumed = call("POST", f"/campaigns/{cid}/resume")
    assert resumed.status == 200 and resumed.body["status"] == "sending" and resumed.body["paused_reason"] is None
    cancelled = call("POST", f"/campaigns/{cid}/cancel")
    assert cancelled.status == 200 and cancelled.body["status"] == "cancelled"
    # The batch sees the cancel at its next heartbeat and lets the shard go.
    wait_until(lambda: not Shard.get(*Shard.key(cid, 0), consistent_read=True).lease_owner, timeout=30,
               what="the sender to stop")
    assert call("GET", f"/campaigns/{cid}").body["counts"]["pending"] > 0
    events = call("GET", f"/campaigns/{cid}/events").body["items"]
    assert [(e["kind"], e["by"], e["cause"]) for e in events] == [
        ("started", "person", "send requested"), ("paused", "person", "paused by request"),
        ("resumed", "person", "resume requested"), ("cancelled", "person", "cancel requested")]


def test_concurrent_pause_and_resume_end_consistent(stack):
    campaign = create(recipients=rows(*range(40)), rate=1)
    cid = campaign["id"]
    assert call("POST", f"/campaigns/{cid}/send").status == 200
    for _ in range(4):
        assert call("POST", f"/campaigns/{cid}/pause").status in (200, 409)
        barrier = threading.Barrier(2)
        answers: dict[str, Answer] = {}

        def act(action: str, barrier: threading.Barrier, answers: dict):
            barrier.wait()
            answers[action] = call("POST", f"/campaigns/{cid}/{action}")

        threads = [threading.Thread(target=act, args=(a, barrier, answers)) for a in ("pause", "resume")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # resume (paused → sending) always finds the paused campaign or runs after a pause that
        # found it paused; pause wins only if it comes after resume's write.
        assert answers["resume"].status == 200, answers["resume"].body
        pause = answers["pause"]
        if pause.status == 409:
            # Refused because the campaign was paused; the status it names is read right after,
            # so it may already be resume's `sending`.
            assert pause.error["current_status"] in ("paused", "sending")
        else:
            assert pause.status == 200 and pause.body["status"] in ("paused", "sending")
        final = call("GET", f"/campaigns/{cid}").body["status"]
        assert final == ("paused" if pause.status == 200 else "sending")
    call("POST", f"/campaigns/{cid}/cancel")


def test_retry_failed_sends_retryable_failures_again(stack):
    stack.fake.configure(reject_numbers={digits(1): 131000, digits(2): 131026})
    campaign = create(recipients=rows(0, 1, 2))
    cid = campaign["id"]
    call("POST", f"/campaigns/{cid}/send")
    done = wait_until(lambda: (s := call("GET", f"/campaigns/{cid}").body)["status"] == "completed" and s,
                      timeout=90, what="the first run to complete")
    assert done["counts"]["sent"] == 1 and done["counts"]["failed"] == 2
    failed = call("GET", f"/campaigns/{cid}/recipients", query={"status": "failed"}).body["items"]
    assert {(r["phone"], r["error_code"], r["error_class"]) for r in failed} == {
        (digits(1), 131000, "retryable"), (digits(2), 131026, "recipient")}

    stack.fake.configure(reject_numbers={})
    answer = call("POST", f"/campaigns/{cid}/retry-failed")
    assert answer.status == 200 and answer.body["reopened_shards"] == 1
    done = wait_until(lambda: (s := call("GET", f"/campaigns/{cid}").body)["status"] == "completed" and s,
                      timeout=60, what="the retry to complete")
    assert done["counts"]["sent"] == 2 and done["counts"]["failed"] == 1
    assert [s["to"] for s in stack.fake.sends()].count(digits(1)) == 1
    # The event follows the status it tells of (the sender writes the completion, then its event).
    events = wait_until(lambda: len(e := call("GET", f"/campaigns/{cid}/events").body["items"]) >= 4 and e, 10,
                        "the second completion's event")
    assert [(e["kind"], e["by"]) for e in events] == [("started", "person"), ("completed", "system"),
                                                      ("retried", "person"), ("completed", "system")]
    assert events[2]["cause"] == "1 retryable failure(s) back to pending"


# -- GET -----------------------------------------------------------------------------------------------------


def test_events_are_the_campaigns_history_in_pages_oldest_or_newest_first(stack):
    send_at = time.time() + 3600
    cid = create(send_at=send_at)["id"]
    assert call("GET", f"/campaigns/{create()['id']}/events").body == {"items": [], "next": None}  # a draft's
    call("POST", f"/campaigns/{cid}/cancel")
    answer = call("GET", f"/campaigns/{cid}/events")
    assert answer.status == 200 and answer.body["next"] is None
    scheduled, cancelled = answer.body["items"]
    assert set(scheduled) == {"at", "kind", "by", "cause", "until", "code"}
    assert (scheduled["kind"], scheduled["by"], scheduled["code"]) == ("scheduled", "person", None)
    assert abs(epoch_of(scheduled["until"]) - send_at) < 0.002 and epoch_of(scheduled["at"]) <= time.time()
    assert (cancelled["kind"], cancelled["cause"], cancelled["until"]) == ("cancelled", "cancel requested", None)
    assert epoch_of(scheduled["at"]) <= epoch_of(cancelled["at"])
    first = call("GET", f"/campaigns/{cid}/events", query={"limit": "1"}).body
    assert [e["kind"] for e in first["items"]] == ["scheduled"] and first["next"]
    rest = call("GET", f"/campaigns/{cid}/events", query={"limit": "1", "next": first["next"]}).body
    assert [e["kind"] for e in rest["items"]] == ["cancelled"]
    # A full last page cannot know it is the last: its `next` answers an empty page that ends the listing.
    assert call("GET", f"/campaigns/{cid}/events", query={"next": rest["next"]}).body == {"items": [], "next": None}
    newest = call("GET", f"/campaigns/{cid}/events", query={"order": "newest", "limit": "1"}).body
    assert [e["kind"] for e in newest["items"]] == ["cancelled"]
    assert_error(call("GET", "/campaigns/0123456789abcdef/events"), 404, "not_found", "id")
    for query, field in (({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"order": "up"}, "order"),
                         ({"next": "not-a-token"}, "next")):
        assert_error(call("GET", f"/campaigns/{cid}/events", query=query), 422, "validation_error", field)
    other = create(send_at=send_at)["id"]  # a token of one campaign's history is not one of another's
    assert_error(call("GET", f"/campaigns/{other}/events", query={"next": first["next"]}), 422,
                 "validation_error", "next")


def test_get_unknown_campaign_is_404(stack):
    assert_error(call("GET", "/campaigns/0123456789abcdef"), 404, "not_found", "id")


def test_unknown_route_is_404_json(stack):
    assert_error(call("GET", "/nothing/here"), 404, "not_found")
    assert_error(call("DELETE", "/campaigns"), 404, "not_found")


def test_list_campaigns_newest_first_in_pages(stack):
    ids = [create(name=f"c{n}")["id"] for n in range(5)]
    call("POST", f"/campaigns/{ids[1]}/cancel")
    seen, token = [], None
    while True:
        query = {"limit": "2", **({"next": token} if token else {})}
        answer = call("GET", "/campaigns", query=query)
        assert answer.status == 200 and len(answer.body["items"]) <= 2
        seen += [c["id"] for c in answer.body["items"]]
        token = answer.body["next"]
        if token is None:
            break
    assert seen == list(reversed(ids))
    cancelled = call("GET", "/campaigns", query={"status": "cancelled"}).body
    assert [c["id"] for c in cancelled["items"]] == [ids[1]] and cancelled["next"] is None


@pytest.mark.parametrize(("query", "field"), [({"limit": "0"}, "limit"), ({"limit": "1000"}, "limit"),
                                              ({"limit": "ten"}, "limit"), ({"status": "lost"}, "status"),
                                              ({"next": "not-a-token"}, "next"),
                                              ({"next": "eyJhIjogMX0"}, "next")])
def test_list_campaigns_rejects_bad_queries(stack, query, field):
    assert_error(call("GET", "/campaigns", query=query), 422, "validation_error", field)


def test_list_recipients_pages_over_shards_with_a_status_filter(stack):
    campaign = create(recipients=rows(*range(7)), rate=250)
    cid = campaign["id"]
    assert campaign["shards"] == 4
    # One recipient failed, set as a sender's checkpoint would.
    rec = Recipient.get(shard_pk(cid, 2), recipient_sk(0))
    assert ledger.claim(rec, "batch", time.time()) and ledger.mark_failed(rec, "batch", 131026, "undeliverable", 1.0)

    seen, token = [], None
    while True:
        answer = call("GET", f"/campaigns/{cid}/recipients", query={"limit": "3", **({"next": token} if token
                                                                                      else {})})
        assert answer.status == 200 and len(answer.body["items"]) <= 3
        seen += answer.body["items"]
        token = answer.body["next"]
        if token is None:
            break
    assert sorted(r["phone"] for r in seen) == sorted(digits(n) for n in range(7))
    failed = call("GET", f"/campaigns/{cid}/recipients", query={"status": "failed"}).body
    assert [(r["key"], r["error_code"], r["error_class"], r["error_message"]) for r in failed["items"]] == [
        (f"{cid}:2:0", 131026, "recipient", "undeliverable")]


def test_sparse_filters_answer_short_pages_but_miss_nothing(stack, monkeypatch):
    """A listing reads a bounded number of DynamoDB pages per call: a rare status over a big shard gives
    short (even empty) pages with a `next`, never a call that reads the whole partition."""
    monkeypatch.setattr(views, "MAX_LISTING_PAGES", 1)
    campaign = create(recipients=rows(*range(12)), rate=160)
    cid = campaign["id"]
    for shard, seq in ((0, 4), (1, 2), (1, 5)):
        rec = Recipient.get(shard_pk(cid, shard), recipient_sk(seq))
        assert ledger.claim(rec, "b", time.time()) and ledger.mark_failed(rec, "b", 131026, "x", 1.0)
    found, token, calls = [], None, 0
    while True:
        answer = call("GET", f"/campaigns/{cid}/recipients",
                      query={"status": "failed", "limit": "2", **({"next": token} if token else {})})
        assert answer.status == 200 and len(answer.body["items"]) <= 2
        found += [r["key"] for r in answer.body["items"]]
        calls += 1
        token = answer.body["next"]
        if token is None:
            break
    assert found == [f"{cid}:0:4", f"{cid}:1:2", f"{cid}:1:5"]
    assert calls > 2  # pages were short: the budget held

    for n in range(3):
        create(name=f"other{n}")
    call("POST", f"/campaigns/{cid}/cancel")
    seen, token = [], None
    while True:
        page = call("GET", "/campaigns", query={"status": "cancelled", "limit": "5",
                                                **({"next": token} if token else {})}).body
        seen += [c["id"] for c in page["items"]]
        token = page["next"]
        if token is None:
            break
    assert seen == [cid]


def test_list_recipients_rejects_bad_queries(stack):
    one, other = create(recipients=rows(1, 2)), create(recipients=rows(3, 4))
    token = call("GET", f"/campaigns/{other['id']}/recipients", query={"limit": "1"}).body["next"]
    assert token
    assert_error(call("GET", f"/campaigns/{one['id']}/recipients", query={"next": token}), 422,
                 "validation_error", "next")
    assert_error(call("GET", f"/campaigns/{one['id']}/recipients", query={"status": "delivered"}), 422,
                 "validation_error", "status")
    assert_error(call("GET", f"/campaigns/{one['id']}/recipients", query={"limit": "501"}), 422,
                 "validation_error", "limit")
    assert_error(call("GET", "/campaigns/0123456789abcdef/recipients"), 404, "not_found")


def test_campaign_status_shape(stack):
    campaign = create(recipients=rows(1, 2))
    body = call("GET", f"/campaigns/{campaign['id']}").body
    for name in ("id", "status", "counts", "total", "paused_reason", "progress", "current_rate", "pace",
                 "eta_seconds", "stuck_shards", "last_error"):
        assert name in body
    assert body["counts"]["pending"] == 2 and body["total"] == 2


def _moments(answer) -> dict[str, object]:
    """Every `*_at` field anywhere in an answer, by its path."""
    found: dict[str, object] = {}

    def walk(value, path):
        if isinstance(value, dict):
            for key, inner in value.items():
                if key.endswith("_at"):
                    found[f"{path}.{key}"] = inner
                walk(inner, f"{path}.{key}")
        elif isinstance(value, list):
            for n, inner in enumerate(value):
                walk(inner, f"{path}[{n}]")

    walk(answer, "")
    return found


def test_every_moment_in_every_answer_is_iso_8601_utc(stack):
    """One form: ISO 8601 in UTC, whether the store keeps the moment as epoch seconds or as a string."""
    campaign = create(recipients=rows(1, 2), send_at=time.time() + 3600)
    cid = campaign["id"]
    Campaign(*Campaign.key(cid)).update(actions=[Campaign.started_at.set(1_795_892_060.97),
                                                 Campaign.completed_at.set(1_795_892_075.91)])
    rec = stored(cid)[0]
    rec.update(actions=[Recipient.sent_at.set(1_795_892_061), Recipient.delivered_at.set(1_795_892_062.5),
                        Recipient.read_at.set(1_795_892_063), Recipient.failed_at.set(1_795_892_064),
                        Recipient.in_doubt_at.set(1_795_892_065)])
    status = call("GET", f"/campaigns/{cid}").body
    listed = call("GET", "/campaigns").body
    recipients = call("GET", f"/campaigns/{cid}/recipients").body
    answers = {"status": status, "list": listed, "recipients": recipients, "create": campaign}
    moments = {f"{name}{path}": value for name, answer in answers.items() for path, value in _moments(answer).items()}
    for name in ("status.send_at", "status.created_at", "status.started_at", "status.completed_at",
                 "list.items[0].send_at", "list.items[0].created_at", "list.items[0].started_at",
                 "list.items[0].completed_at", "recipients.items[0].sent_at", "recipients.items[0].delivered_at",
                 "recipients.items[0].read_at", "recipients.items[0].failed_at", "recipients.items[0].in_doubt_at"):
        assert name in moments, name
    for name, value in moments.items():
        assert value is None or (isinstance(value, str) and ISO_UTC.match(value)), (name, value)
    assert status["started_at"] == "2026-11-28T18:54:20.970+00:00"
    assert recipients["items"][0]["delivered_at"] == "2026-11-28T18:54:22.500+00:00"
    assert epoch_of(status["created_at"]) == pytest.approx(time.time(), abs=60)
    assert listed["items"][0]["send_at"] == status["send_at"]


# -- the live figures: achieved rate, pace, ETA ----------------------------------------------------------


def _shard_figures(cid: str, shard: int, *, achieved: float, pace: float, measured_at: float,
                   held: bool = True) -> None:
    """What a batch's heartbeat writes on its shard item, written here directly."""
    actions = [Shard.achieved_rate.set(achieved), Shard.pace.set(pace), Shard.measured_at.set(measured_at)]
    actions.append(Shard.lease_owner.set(f"batch-{shard}") if held else Shard.lease_owner.remove())
    Shard(*Shard.key(cid, shard)).update(actions=actions)


def test_status_reports_the_achieved_rate_and_the_pace_apart_and_the_eta_from_what_is_achieved(stack):
    cid = create(recipients=rows(*range(1, 301)), rate=240)["id"]  # 3 shards, 100 recipients each
    now = time.time()
    _shard_figures(cid, 0, achieved=20.0, pace=79.2, measured_at=now)
    _shard_figures(cid, 1, achieved=19.5, pace=79.2, measured_at=now - 1)
    _shard_figures(cid, 2, achieved=0.0, pace=79.2, measured_at=now)
    body = call("GET", f"/campaigns/{cid}").body
    assert body["current_rate"] == 39.5 and body["pace"] == pytest.approx(237.6)
    assert body["eta_seconds"] == round(300 / 39.5)  # 8 s, where the pace would say 1


def test_a_dead_or_released_batch_figures_stop_counting(stack):
    cid = create(recipients=rows(*range(1, 301)), rate=240)["id"]
    now = time.time()
    stale = now - achieved.fresh_for(settings().heartbeat_seconds, settings().clock_skew_seconds) - 1
    _shard_figures(cid, 0, achieved=20.0, pace=79.2, measured_at=now)
    _shard_figures(cid, 1, achieved=30.0, pace=79.2, measured_at=stale)  # its batch died: still held
    _shard_figures(cid, 2, achieved=40.0, pace=79.2, measured_at=now, held=False)  # let go: not sending
    body = call("GET", f"/campaigns/{cid}").body
    assert (body["current_rate"], body["pace"]) == (20.0, 79.2)
    _shard_figures(cid, 0, achieved=0.0, pace=79.2, measured_at=now)
    body = call("GET", f"/campaigns/{cid}").body
    assert (body["current_rate"], body["eta_seconds"]) == (0.0, None)  # nothing is being sent


def test_openapi_route_serves_the_schema(stack):
    answer = call("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.body == json.loads(json.dumps(openapi_schema()))


def test_created_campaign_item_is_what_the_service_reads(stack):
    """The API writes through the service: the stored campaign has the template as the sender fills it."""
    campaign = create(template={**TEMPLATE, "language": {"code": "pt_BR"}})
    item = Campaign.get(*Campaign.key(campaign["id"]))
    assert item.template["language"] == "pt_BR"
    assert item.template["components"] == TEMPLATE["components"]


# -- /numbers ---------------------------------------------------------------------------------------------


def test_a_number_unset_has_metas_default_and_put_sets_its_limit(stack):
    answer = call("GET", "/numbers/5550001")
    assert answer.status == 200
    assert answer.body == {"phone_number_id": "5550001", "throughput_mps": 80.0, "configured": False, "secret": None,
                           "business_account_id": None, "in_use_mps": 0.0, "sending": [], "messaging_limit": None, "portfolio": "5550001",
                           "reached_24h": 0, "left": None, "next_room_at": None}
    answer = call("PUT", "/numbers/5550001", {"throughput_mps": 20})
    assert answer.status == 200 and answer.body["throughput_mps"] == 20.0 and answer.body["configured"]
    assert call("GET", "/numbers/5550001").body["throughput_mps"] == 20.0
    call("PUT", "/numbers/5550002", {"throughput_mps": 1000, "messaging_limit": 2000, "portfolio": "acme"})
    listed = call("GET", "/numbers").body["items"]
    assert [(n["phone_number_id"], n["throughput_mps"], n["messaging_limit"], n["portfolio"]) for n in listed] == [
        ("5550001", 20.0, None, "5550001"), ("5550002", 1000.0, 2000, "acme")]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/numbers/5550001", {"throughput_mps": 0}, "throughput_mps"),
    ("/numbers/5550001", {"throughput_mps": 1001}, "throughput_mps"),
    ("/numbers/5550001", {"throughput_mps": 20, "tier": 1}, "tier"),
    ("/numbers/5550001", {"throughput_mps": 20, "messaging_limit": 0}, "messaging_limit"),
    ("/numbers/5550001", {"throughput_mps": 20, "portfolio": "a b"}, "portfolio"),
    ("/numbers/55-50", {"throughput_mps": 20}, "phone_number_id"),
])
def test_a_bad_number_setting_is_422_naming_the_field_and_writes_nothing(stack, path, body, field):
    assert_error(call("PUT", path, body), 422, field=field)
    assert call("GET", "/numbers/5550001").body["configured"] is False


@pytest.mark.parametrize(("window", "field"), [
    ({"start": "09:00", "end": "20:00", "timezone": "Mars/Olympus"}, "send_window.timezone"),
    ({"start": "9:00", "end": "20:00", "timezone": "UTC"}, "send_window.start"),
    ({"start": "09:00", "end": "09:00", "timezone": "UTC"}, "send_window.end"),
    ({"start": "09:00", "end": "20:00", "timezone": "UTC", "days": ["someday"]}, "send_window.days[0]"),
])
def test_a_bad_send_window_is_422_naming_its_field_and_creates_nothing(stack, window, field):
    assert_error(call("POST", "/campaigns", campaign_body(send_window=window)), 422, field=field)
    assert call("GET", "/campaigns").body["items"] == []


def test_a_send_window_is_kept_and_shown(stack):
    window = {"start": "22:00", "end": "06:00", "timezone": "Asia/Kolkata", "days": ["fri", "sat"]}
    created = call("POST", "/campaigns", campaign_body(send_window=window))
    assert created.status == 201 and created.body["send_window"] == window


def test_an_expiry_is_kept_and_shown_in_the_status_and_the_list(stack):
    created = create(expires_at="2099-01-01T09:30:00+05:30")
    assert created["expires_at"] == "2099-01-01T04:00:00.000+00:00" and created["counts"]["expired"] == 0
    listed = call("GET", "/campaigns").body["items"]
    assert [c["expires_at"] for c in listed if c["id"] == created["id"]] == ["2099-01-01T04:00:00.000+00:00"]


# -- the suppression list ---------------------------------------------------------------------------------------


def test_a_person_puts_looks_up_lists_and_removes_suppressed_numbers(stack):
    campaign = create(recipients=rows(1, 2, 3))
    added = call("PUT", f"/suppressions/{digits(2)}", {"reason": "asked by phone"})
    assert added.status == 201
    assert {k: v for k, v in added.body.items() if k != "created_at"} == {
        "phone": digits(2), "reason": "suppressed by a person: asked by phone", "source": "person",
        "skipped_recipients": 1}
    assert ISO_UTC.match(added.body["created_at"])
    skipped = call("GET", f"/campaigns/{campaign['id']}/recipients", query={"status": "skipped"}).body["items"]
    assert [(r["phone"], r["error_message"]) for r in skipped] == [(digits(2), "suppressed by a person: asked by phone")]
    status = call("GET", f"/campaigns/{campaign['id']}").body
    assert (status["counts"]["skipped"], status["counts"]["pending"], status["total"]) == (1, 2, 3)
    # Again (a retry, or a number already on the list): 200, the item as it was, nothing skipped twice.
    again = call("PUT", f"/suppressions/%2B{digits(2)}", {"reason": "other"})
    assert again.status == 200 and again.body == {**added.body, "skipped_recipients": 0}
    assert call("PUT", "/suppressions/+91 98765 00003").status == 201  # no body: no reason given
    assert call("GET", f"/suppressions/{digits(3)}").body["reason"] == "suppressed by a person: no reason given"

    listed = call("GET", "/suppressions").body
    assert [item["phone"] for item in listed["items"]] == [digits(3), digits(2)] and listed["next"] is None
    first = call("GET", "/suppressions", query={"limit": "1"}).body
    second = call("GET", "/suppressions", query={"limit": "1", "next": first["next"]}).body
    assert [i["phone"] for i in first["items"] + second["items"]] == [digits(3), digits(2)]

    removed = call("DELETE", f"/suppressions/{digits(2)}")
    assert removed.status == 204 and removed.body == {}
    assert_error(call("DELETE", f"/suppressions/{digits(2)}"), 404, "not_found", "phone")
    assert_error(call("GET", f"/suppressions/{digits(2)}"), 404, "not_found", "phone")
    # Taking a number off the list does not un-skip its recipients; a later import takes it again.
    assert call("GET", f"/campaigns/{campaign['id']}").body["counts"]["skipped"] == 2  # numbers 2 and 3
    other = create()
    assert call("POST", f"/campaigns/{other['id']}/recipients", {"recipients": rows(2)}).body["accepted"] == 1


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("PUT", "/suppressions/12345", None, "phone"),
    ("PUT", "/suppressions/0987654321", None, "phone"),
    ("PUT", "/suppressions/91abc76543210", None, "phone"),
    ("GET", "/suppressions/123", None, "phone"),
    ("DELETE", "/suppressions/123", None, "phone"),
    ("PUT", "/suppressions/919876500001", {"reason": ""}, "reason"),
    ("PUT", "/suppressions/919876500001", {"reason": "x" * 201}, "reason"),
    ("PUT", "/suppressions/919876500001", {"why": "x"}, "why"),
])
def test_a_bad_suppression_request_is_422_naming_the_field_and_writes_nothing(stack, method, path, body, field):
    assert_error(call(method, path, body), 422, "validation_error", field)
    assert call("GET", "/suppressions").body["items"] == []


@pytest.mark.parametrize(("query", "field"), [({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
                                              ({"next": "not-a-token"}, "next")])
def test_listing_suppressions_rejects_bad_queries(stack, query, field):
    assert_error(call("GET", "/suppressions", query=query), 422, field=field)
