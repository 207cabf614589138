"""Test sends: a campaign's template sent now to a few numbers (`POST /campaigns/{id}/test`), to see
it on a phone before the campaign itself goes out.

A test send goes out exactly as a send of the campaign would: the same payload
(whatsapp.template_payload), the same client and token (sending.whatsapp_client with the number's own
secret when it has one), the same endpoint (the campaign's `api`). The numbers are sent to at once,
one thread each, synchronously: each request has the client's connect and read timeouts and is never
retried, so the whole answer comes within one request's worth of time, well inside API Gateway's 29 s.

It writes nothing: no recipient, no counter, no claim, no campaign status, and not the suppression list
either (a 131050 answer is reported, not acted on: only a real send suppresses). Its
`biz_opaque_callback_data` is `test:<campaign id>:<token>` (models.callback_for_test_send), which names
no recipient: its status webhooks are known for what they are and change nothing (statuses.apply).

Refused, with nothing sent: a campaign that is sending, completed or cancelled (409); no number, more
than MAX_TEST_RECIPIENTS, an invalid one, a wrong count of variables, or a number given twice (422
naming the first, e.g. `recipients[1].phone`). A number on the suppression list is not sent to: its
result is an error of class `suppressed` (it opted out; a test is no reason to message it again).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from . import imports, numbers, suppressions, templates
from .config import Settings
from .errors import Conflict, Unprocessable
from .graph_errors import ErrorClass, classify
from .models import Campaign, callback_for_test_send
from .observability import count_test_sends, logger, mask_phone
from .sending import whatsapp_client
from .states import TESTABLE
from .views import get_campaign
from .whatsapp import Outcome, SendResult, template_payload

MAX_TEST_RECIPIENTS = 10

# The classes of a result that is not a Graph error class (graph_errors.ErrorClass) of its own.
SUPPRESSED = "suppressed"  # on the suppression list: not sent
NO_ANSWER = "no_answer"  # the request may have reached Meta, but no answer came back: it may have been sent


def send_tests(campaign_id: str, items: object, settings: Settings) -> list[dict]:
    """Send the campaign's template to each of `items` (`{"phone", "variables"}`); one result each, in order."""
    campaign = get_campaign(campaign_id)
    if campaign.status not in {s.value for s in TESTABLE}:
        raise Conflict(f"cannot test a campaign that is {campaign.status}", current_status=campaign.status)
    rows = valid_rows(items, templates.variable_count(campaign.template))
    opted_out = {row.phone: item for row in rows if (item := suppressions.find(row.phone)) is not None}
    to_send = [row for row in rows if row.phone not in opted_out]
    sent: dict[str, dict] = {}
    if to_send:
        client = whatsapp_client(settings, MAX_TEST_RECIPIENTS, numbers.secret_of(campaign.phone_number_id))
        with ThreadPoolExecutor(max_workers=len(to_send), thread_name_prefix="test-send") as pool:
            for row, result in zip(to_send, pool.map(lambda row: _send(client, campaign, row), to_send),
                                   strict=True):
                sent[row.phone] = result
    results = [sent[row.phone] if row.phone in sent else _suppressed(row.phone, opted_out[row.phone].reason)
               for row in rows]
    if to_send:
        count_test_sends(len(to_send))  # the numbers sent to (a suppressed one is not)
    for result in results:
        outcome = "sent" if result["ok"] else result["error"]["class"]
        logger.info("test send", extra={"campaign_id": campaign_id, "phone": mask_phone(result["phone"]),
                                        "outcome": outcome, "code": (result.get("error") or {}).get("code")})
    return results


def valid_rows(items: object, expected: int) -> list[imports.Row]:
    """The numbers as an import validates them (imports.parse_items), all valid and distinct, or a 422."""
    if not isinstance(items, list) or not items:
        raise Unprocessable("recipients must be a list of 1 to 10 {phone, variables}", field="recipients")
    if len(items) > MAX_TEST_RECIPIENTS:
        raise Unprocessable(f"a test goes to at most {MAX_TEST_RECIPIENTS} numbers, not {len(items)}",
                            field="recipients")
    parsed = imports.parse_items(items, expected)
    if parsed.rejected:
        first = parsed.rejected[0]
        raise Unprocessable(f"{parsed.first_rejection_field()}: {first.reason}; nothing was sent",
                            field=parsed.first_rejection_field(),
                            details={"rejected": parsed.rejected_report(), "rejected_count": len(parsed.rejected)})
    seen: dict[str, int] = {}
    for row in parsed.rows:
        if row.phone in seen:
            raise Unprocessable(f"recipients[{row.position}].phone: the same number as recipients[{seen[row.phone]}]"
                                "; nothing was sent", field=f"recipients[{row.position}].phone")
        seen[row.phone] = row.position
    return parsed.rows


def _send(client, campaign: Campaign, row: imports.Row) -> dict:
    payload = template_payload(row.phone, campaign.template, row.variables,
                               callback_for_test_send(campaign.id, uuid.uuid4().hex[:12]))
    try:
        answer = client.send_template(campaign.phone_number_id, payload, campaign.api)
    except Exception as error:  # never one number's failure for the others' results
        logger.exception("test send failed unexpectedly", extra={"campaign_id": campaign.id})
        answer = SendResult(Outcome.NOT_SENT, code=None, message=f"{type(error).__name__}: {error}")
    return result_of(row.phone, answer)


def result_of(phone: str, answer: SendResult) -> dict:
    """What the answer says of one test send: its wamid, or the error with its class."""
    if answer.outcome == Outcome.ACCEPTED:
        return {"phone": phone, "ok": True, "wamid": answer.wamid}
    if answer.outcome == Outcome.UNKNOWN:
        error_class = NO_ANSWER
    elif answer.outcome == Outcome.NOT_SENT or answer.code is None:
        error_class = ErrorClass.RETRYABLE.value
    else:
        error_class = classify(int(answer.code), answer.http_status or 400).value
    return {"phone": phone, "ok": False,
            "error": {"code": answer.code, "message": answer.message[:500], "class": error_class}}


def _suppressed(phone: str, reason: str) -> dict:
    return {"phone": phone, "ok": False,
            "error": {"code": None, "message": f"not sent: the number is on the suppression list ({reason})",
                      "class": SUPPRESSED}}
