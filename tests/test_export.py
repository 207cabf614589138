"""GET /campaigns/{id}/recipients.csv: a header and one row per recipient, in pages that each fit the
response limits (campaigns.export), in-process with API Gateway proxy events and over HTTP through the
local gateway (its Link and Content-Type headers as the handler gave them)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from campaigns import export, ledger, views
from campaigns.models import Recipient, recipient_sk, shard_pk
from functions.api.app import lambda_handler
from local.gateway import Gateway
from tests.helpers import wait_until
from tests.test_api import ISO_UTC, api_event, assert_error, call, create, digits, lambda_context, phone, rows

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["phone", "status", "error_code", "error_message", "sent_at", "delivered_at", "read_at"]


@pytest.fixture
def stack(make_stack):
    return make_stack(with_scheduler=False)


def csv_call(path: str, query: dict | None = None) -> tuple[int, dict, str]:
    """(status, headers by lower-case name, body) of a GET through the handler."""
    result = lambda_handler(api_event("GET", path, query=query), lambda_context())
    headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
    headers.update({k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()})
    assert result.get("isBase64Encoded") in (None, False)
    return result["statusCode"], headers, result["body"]


def parsed(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body, newline="")))


def export_all(cid: str, **query: str) -> tuple[list[list[str]], list[tuple[int, dict]]]:
    """Every page, following each answer's cursor: (the rows without headers, [(rows, headers) per page])."""
    found, pages, cursor = [], [], None
    while True:
        status, headers, body = csv_call(f"/campaigns/{cid}/recipients.csv",
                                         {**query, **({"next": cursor} if cursor else {})})
        assert status == 200, body
        lines = parsed(body)
        assert lines[0] == HEADER  # every page is a complete CSV
        found += lines[1:]
        pages.append((len(lines) - 1, headers))
        cursor = headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in headers  # the last page has no next
            return found, pages
        assert len(pages) < 1000, "the cursor does not advance"


def fail(cid: str, shard: int, seq: int, code: int, message: str) -> None:
    """A recipient failed, written as a sender's checkpoint would."""
    rec = Recipient.get(shard_pk(cid, shard), recipient_sk(seq))
    assert ledger.claim(rec, "batch", time.time()) and ledger.mark_failed(rec, "batch", code, message, 1.0)


# -- the answer -----------------------------------------------------------------------------------------


def test_a_header_and_one_row_per_recipient(stack):
    cid = create(recipients=rows(*range(5)))["id"]
    status, headers, body = csv_call(f"/campaigns/{cid}/recipients.csv")
    assert status == 200
    assert headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert headers["content-disposition"] == f'attachment; filename="{cid}-recipients.csv"'
    assert "link" not in headers and "x-next-cursor" not in headers  # it fits: one answer
    assert body.startswith(",".join(HEADER) + "\r\n") and body.endswith("\r\n")
    lines = parsed(body)
    assert lines[0] == HEADER
    assert sorted(line[0] for line in lines[1:]) == sorted(digits(n) for n in range(5))  # digits, as the JSON
    assert all(line[1:] == ["pending", "", "", "", "", ""] for line in lines[1:])


def test_the_csv_and_the_json_routes_each_answer_their_own(stack):
    """Two routes share a prefix: the resolver and the local gateway tell them apart."""
    cid = create(recipients=rows(1))["id"]
    assert call("GET", f"/campaigns/{cid}/recipients").body["items"][0]["phone"] == digits(1)
    status, headers, body = csv_call(f"/campaigns/{cid}/recipients.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv") and parsed(body)[1][0] == digits(1)
    gateway = Gateway(dashboard=False)
    for path, resource in ((f"/campaigns/{cid}/recipients", "/campaigns/{id}/recipients"),
                           (f"/campaigns/{cid}/recipients.csv", "/campaigns/{id}/recipients.csv")):
        matched, parameters, _ = gateway.find_route("GET", path)
        assert (matched.resource, parameters) == (resource, {"id": cid})


def test_the_status_filter_and_its_refusals(stack):
    cid = create(recipients=rows(*range(6)), rate=160)["id"]  # two shards
    fail(cid, 1, 1, 131026, "Message undeliverable")
    fail(cid, 0, 2, 131049, "healthy ecosystem")
    found, _ = export_all(cid, status="failed")
    assert [(line[0], line[1], line[2], line[3]) for line in found] == [
        (digits(4), "failed", "131049", "healthy ecosystem"), (digits(3), "failed", "131026", "Message undeliverable")]
    assert len(export_all(cid, status="pending")[0]) == 4
    assert export_all(cid, status="expired")[0] == []
    for bad in ("delivered", "bogus"):
        answer = call("GET", f"/campaigns/{cid}/recipients.csv", query={"status": bad})
        assert_error(answer, 422, "validation_error", "status")
    for bad in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}):
        assert_error(call("GET", f"/campaigns/{cid}/recipients.csv", query=bad), 422, "validation_error", "limit")


def test_an_unknown_campaign_is_404_and_a_foreign_cursor_422(stack):
    assert_error(call("GET", "/campaigns/0123456789abcdef/recipients.csv"), 404, "not_found", "id")
    assert_error(call("GET", "/campaigns/no%23such/recipients.csv"), 404, "not_found", "id")
    one, other = create(recipients=rows(1, 2))["id"], create(recipients=rows(3, 4))["id"]
    cursor = csv_call(f"/campaigns/{other}/recipients.csv", {"limit": "1"})[1]["x-next-cursor"]
    for bad in (cursor, "not-a-cursor", views.page_token([5, None]), views.page_token([0, {"PK": {"S": "x"}}])):
        assert_error(call("GET", f"/campaigns/{one}/recipients.csv", query={"next": bad}), 422, "validation_error",
                     "next")


# -- pages ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 4])
def test_pages_give_every_recipient_exactly_once_and_the_last_has_no_link(stack, limit):
    cid = create(recipients=rows(*range(11)), rate=250)["id"]  # four shards of 3, 3, 3, 2
    whole = parsed(csv_call(f"/campaigns/{cid}/recipients.csv")[2])[1:]
    found, pages = export_all(cid, limit=str(limit))
    assert found == whole  # the same rows in the same order, none skipped, none twice
    assert sorted(line[0] for line in found) == sorted(digits(n) for n in range(11))
    assert all(n <= limit for n, _ in pages) and len(pages) >= -(-11 // limit)
    for _, headers in pages[:-1]:
        # RFC 8288, relative to the request's URL, carrying the query on; the same cursor as X-Next-Cursor.
        link = headers["link"]
        assert link.startswith("<recipients.csv?") and link.endswith('>; rel="next"')
        query = parse_qs(urlsplit(link[1:link.index(">")]).query)
        assert query == {"limit": [str(limit)], "next": [headers["x-next-cursor"]]}


def test_a_sparse_filter_answers_short_pages_and_misses_nothing(stack, monkeypatch):
    monkeypatch.setattr(export, "MAX_READ_PAGES", 1)
    cid = create(recipients=rows(*range(12)), rate=160)["id"]
    for shard, seq in ((0, 4), (1, 2), (1, 5)):
        fail(cid, shard, seq, 131026, "x")
    found, pages = export_all(cid, status="failed", limit="2")
    assert [line[0] for line in found] == [digits(8), digits(5), digits(11)]
    assert len(pages) > 2 and 0 in [n for n, _ in pages]  # short pages, one even empty, with a cursor


def test_a_page_stops_at_its_byte_budget_and_the_next_goes_on_from_the_row_after(stack):
    cid = create(recipients=rows(*range(9)))["id"]
    for seq in range(9):
        fail(cid, 0, seq, 131000, f"message {seq} " + "x" * 200)
    seen, cursor, bodies = [], None, 0
    while True:
        page = export.page(cid, cursor=cursor, max_bytes=700)
        lines = parsed(page.body)
        assert lines[0] == HEADER and page.rows == len(lines) - 1
        assert len(json.dumps(page.body)) <= 700 + 2 or page.rows == 1  # as Lambda writes it
        seen += [line[3].split()[1] for line in lines[1:]]
        bodies += 1
        if page.next is None:
            break
        cursor = page.next
    assert seen == [str(n) for n in range(9)] and bodies >= 3


def test_rows_of_an_import_that_never_committed_are_left_out(stack):
    cid = create(recipients=rows(1, 2))["id"]
    Recipient(shard_pk(cid, 0), recipient_sk(7), phone="919800000007", import_id="never-committed").save()
    found, _ = export_all(cid)
    assert sorted(line[0] for line in found) == [digits(1), digits(2)]


# -- cells ----------------------------------------------------------------------------------------------


def test_rfc_4180_quoting_of_commas_quotes_and_line_breaks(stack):
    cid = create(recipients=rows(1, 2))["id"]
    message = 'Graph said "no", twice\nthen, again: "no"'
    fail(cid, 0, 0, 131000, message)
    _, _, body = csv_call(f"/campaigns/{cid}/recipients.csv", {"status": "failed"})
    assert '"Graph said ""no"", twice\nthen, again: ""no"""' in body  # quoted, quotes doubled, CRLF records
    assert body.count("\r\n") == 2
    assert parsed(body)[1][:4] == [digits(1), "failed", "131000", message]


@pytest.mark.parametrize(("message", "cell"), [
    ("=HYPERLINK(\"http://evil.example\",\"x\")", "'=HYPERLINK(\"http://evil.example\",\"x\")"),
    ("+1+1", "'+1+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("Message undeliverable", "Message undeliverable"), ("a=b", "a=b"),
])
def test_a_message_a_spreadsheet_would_evaluate_is_written_as_text(stack, message, cell):
    cid = create(recipients=rows(1))["id"]
    fail(cid, 0, 0, 131000, message)
    line = parsed(csv_call(f"/campaigns/{cid}/recipients.csv")[2])[1]
    assert line[3] == cell
    assert line[0] == digits(1)  # the phone is never prefixed
    assert export.text_cell(None) == "" and export.text_cell("") == ""


def test_the_sample_event_answers_csv(stack):
    from campaigns import service
    from campaigns.config import settings
    from tests.helpers import TEMPLATE

    spec = service.CampaignSpec(name="demo", phone_number_id="1234567890", template=TEMPLATE)
    service.create_campaign(spec, settings(), campaign_id="c-demo")
    service.add_recipients("c-demo", [service.RecipientRow("919870000001", ["n"])])
    fail("c-demo", 0, 0, 131026, "Message undeliverable")
    event = json.loads((ROOT / "events" / "api-export-recipients.json").read_text())
    result = lambda_handler(event, lambda_context())
    assert result["statusCode"] == 200, result["body"]
    assert parsed(result["body"]) == [HEADER, ["919870000001", "failed", "131026", "Message undeliverable", "", "",
                                               ""]]


# -- a campaign sent, over HTTP through the local gateway --------------------------------------------


@pytest.fixture
def api(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=10, fake_webhook_failed_ratio=0.0, with_scheduler=False)
    stack.start_gateway(dashboard=False)
    return stack


def test_a_sent_campaign_exports_its_outcomes_through_the_gateway(api):
    url = api.gateway.url
    api.fake.configure(reject_numbers={digits(2): 131026, digits(5): 131026})
    answer = requests.post(f"{url}/campaigns", json={
        "name": "Diwali", "phone_number_id": "1234567890", "rate": 160, "in_doubt_policy": "skip",
        "template": {"name": "diwali_offer", "language": "en_US",
                     "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}]}]},
        "recipients": [{"phone": phone(n), "variables": [f"name{n}"]} for n in range(8)]}, timeout=30)
    assert answer.status_code == 201, answer.text
    cid = answer.json()["id"]
    assert requests.post(f"{url}/campaigns/{cid}/send", timeout=30).status_code == 200

    def read_by_all_sent():
        counts = requests.get(f"{url}/campaigns/{cid}", timeout=30).json()["counts"]
        return counts["failed"] == 2 and counts["sent"] == 6 and counts["read"] == 6

    wait_until(read_by_all_sent, 60, "6 sent and read (status webhooks), 2 failed")

    export_url = f"{url}/campaigns/{cid}/recipients.csv"
    response = requests.get(export_url, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8; header=present"
    lines = parsed(response.text)
    assert lines[0] == HEADER and len(lines) == 9
    rows_by_phone = {line[0]: line for line in lines[1:]}
    assert set(rows_by_phone) == {digits(n) for n in range(8)}
    # Row for row what the JSON listing says, in the same order.
    listed = requests.get(f"{url}/campaigns/{cid}/recipients", timeout=30).json()["items"]
    assert [line[0] for line in lines[1:]] == [r["phone"] for r in listed]
    for r in listed:
        assert rows_by_phone[r["phone"]] == [
            r["phone"], r["status"], str(r["error_code"] or ""), r["error_message"] or "",
            r["sent_at"] or "", r["delivered_at"] or "", r["read_at"] or ""]
    for n in (2, 5):
        line = rows_by_phone[digits(n)]
        assert line[1:3] == ["failed", "131026"] and line[3] and line[4:] == ["", "", ""]
    for n in (0, 1, 3, 4, 6, 7):
        line = rows_by_phone[digits(n)]
        assert line[1:4] == ["sent", "", ""] and all(ISO_UTC.match(moment) for moment in line[4:])

    # Pages through the gateway: its Link is the handler's, resolved against the request's URL.
    found, pages, next_url = [], 0, f"{export_url}?limit=3"
    while next_url:
        response = requests.get(next_url, timeout=30)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
        page = parsed(response.text)
        assert page[0] == HEADER and len(page) <= 4
        found += page[1:]
        pages += 1
        link = response.links.get("next")
        assert (link is None) == ("X-Next-Cursor" not in response.headers)
        next_url = urljoin(response.url, link["url"]) if link else None
    assert found == lines[1:] and pages >= 3
