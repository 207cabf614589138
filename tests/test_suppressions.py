"""Opt-out replies and the suppression list (campaigns/suppressions.py).

Inbound messages shaped as Meta posts them (the `messages` webhook with `value.messages[]`: text,
quick-reply button, interactive button reply), signed and handed to the webhook function as API
Gateway does; the campaigns they concern built through the import (which writes the number books
the opt-out follows); a batch run in this process for the race with a claim, and real sender
processes for the whole path.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from aws_lambda_powertools.utilities import parameters

from campaigns import imports, invoker, ledger, sender, service, suppressions, views
from campaigns.config import Settings, settings
from campaigns.models import Recipient, Shard, Suppression
from local.fakegraph.wire import signature_header
from tests.helpers import TEMPLATE, audit, recipients, status, wait_until
from tests.test_webhook import invoke, sign, webhook_event

DISPLAY, NUMBER_ID = "15550000000", "1234567890"


# -- payloads as Meta posts them -------------------------------------------------------------------------------


def text_message(sender: str, body: str, wamid: str = "wamid.IN1") -> dict:
    return {"from": sender, "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": body}}


def button_message(sender: str, payload: str, text: str | None = None) -> dict:
    """A quick-reply button of a template, tapped."""
    return {"from": sender, "id": "wamid.IN2", "timestamp": str(int(time.time())), "type": "button",
            "context": {"from": DISPLAY, "id": "wamid.OUT1"},
            "button": {"payload": payload, "text": text if text is not None else payload}}


def interactive_reply(sender: str, reply_id: str, title: str) -> dict:
    return {"from": sender, "id": "wamid.IN3", "timestamp": str(int(time.time())), "type": "interactive",
            "interactive": {"type": "button_reply", "button_reply": {"id": reply_id, "title": title}}}


def inbound(*messages: dict, field: str = "messages") -> dict:
    """The `messages` webhook of inbound messages (graph-api.md: value.messages[], with contacts[])."""
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": field, "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY, "phone_number_id": NUMBER_ID},
        "contacts": [{"profile": {"name": "Asha"}, "wa_id": m["from"]} for m in messages],
        "messages": list(messages)}}]}]}


def phone(n: int) -> str:
    return f"9198765{n:05d}"


# -- which messages are opt-outs (no store) ---------------------------------------------------------------------


@pytest.mark.parametrize("body", ["STOP", "stop", " Stop ", "S T O P", "\tsToP\n", "Unsubscribe", "UN SUBSCRIBE"])
def test_stop_and_unsubscribe_match_whatever_their_case_and_spaces(body):
    assert suppressions.opt_outs_of(inbound(text_message(phone(1), body)), Settings()) == [
        (phone(1), "UNSUBSCRIBE" if "sub" in body.lower().replace(" ", "") else "STOP")]


@pytest.mark.parametrize("body", ["stop it", "STOPPED", "please stop", "non-stop", "STOP!", "stop.", "",
                                  "unsubscribed", "Stop promotions", "hello"])
def test_other_texts_are_not_opt_outs(body):
    assert suppressions.opt_outs_of(inbound(text_message(phone(1), body)), Settings()) == []


def test_the_configured_keywords_count_too():
    configured = Settings(opt_out_keywords="Stop promotions, BAJA ,,arrêt")
    for body, keyword in (("stop  PROMOTIONS", "STOP PROMOTIONS"), ("baja", "BAJA"), ("ARRÊT", "ARRÊT"),
                          ("STOP", "STOP")):
        assert suppressions.opt_outs_of(inbound(text_message(phone(1), body)), configured) == [(phone(1), keyword)]
    assert suppressions.opt_outs_of(inbound(text_message(phone(1), "baja")), Settings()) == []


def test_button_payloads_texts_and_interactive_replies_are_read():
    found = suppressions.opt_outs_of(inbound(
        button_message(phone(1), "STOP"),
        button_message(phone(2), "opt-out-7", text="Unsubscribe"),
        interactive_reply(phone(3), "stop", "No thanks"),
        interactive_reply(phone(4), "btn-2", " STOP "),
        button_message(phone(5), "Yes please"),
    ), Settings())
    assert found == [(phone(1), "STOP"), (phone(2), "UNSUBSCRIBE"), (phone(3), "STOP"), (phone(4), "STOP")]


def test_the_sender_is_normalised_and_a_number_counts_once_per_body():
    found = suppressions.opt_outs_of(inbound(text_message("+91 98765 00001", "STOP"),
                                             text_message(phone(1), "unsubscribe", wamid="wamid.IN9"),
                                             text_message("not-a-number", "STOP")), Settings())
    assert found == [(phone(1), "STOP")]


def test_only_inbound_messages_of_a_messages_change_are_read():
    statuses_only = {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [
            {"id": "wamid.X", "status": "read", "timestamp": "1", "recipient_id": phone(1)}]}}]}]}
    for body in (statuses_only, inbound(text_message(phone(1), "STOP"), field="message_template_status_update"),
                 {}, [], {"entry": "x"}, {"entry": [{"changes": [{"field": "messages", "value": {"messages": "x"}}]}]}):
        assert suppressions.opt_outs_of(body, Settings()) == []


# -- through the webhook, against the store ------------------------------------------------------------------------


@pytest.fixture
def stack(make_stack):
    parameters.clear_caches()  # each stack has its own secret
    return make_stack(with_scheduler=False)


@pytest.fixture
def post(stack):
    def post(payload: dict) -> dict:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, stack.secret["app_secret"])}
        code, answer, _ = invoke(webhook_event("POST", body.decode(), headers))
        assert code == 200, answer
        return json.loads(answer)

    return post


def imported_campaign(numbers: list[int], rate: int = 80, **spec):
    """A draft campaign whose recipients came through the import (number books and all)."""
    spec = service.CampaignSpec(name="offer", phone_number_id=NUMBER_ID, template=TEMPLATE, rate=rate, **spec)
    parsed = imports.parse_items([{"phone": "+" + phone(n), "variables": [f"name{n}"]} for n in numbers], 1)
    campaign_id, report = service.create(spec, settings(), parsed)
    assert report["accepted"] == len(numbers)
    return views.get_campaign(campaign_id)


def by_phone(campaign) -> dict[str, Recipient]:
    return {r.phone: r for r in recipients(campaign)}


def counts(campaign) -> dict:
    return status(campaign)["counts"]


def test_a_stop_skips_the_senders_pending_recipient_in_every_campaign_not_finished(stack, post, monkeypatch):
    monkeypatch.setattr(invoker, "invoke_sender", lambda _settings, _event: True)  # no batch runs: all stay pending
    draft = imported_campaign([1, 2, 3])
    sending = imported_campaign([1, 2], rate=160)  # two shards
    service.send(sending.id, settings())
    paused = imported_campaign([1, 4])
    service.send(paused.id, settings())
    service.pause(paused.id)
    finished = imported_campaign([1])
    service.cancel(finished.id)
    webhook_moves = int(Shard.get(*Shard.key(draft.id, 0)).webhook_moves)

    assert post(inbound(text_message(phone(1), " Stop "))) == {"statuses": 0, "opt_outs": 1}

    item = Suppression.get(*Suppression.key(phone(1)))
    assert (item.source, item.reason, item.list_pk) == ("reply", "opted out: replied STOP", "SUPPRESSION")
    for campaign in (draft, sending, paused):
        rec = by_phone(campaign)[phone(1)]
        assert (rec.status, rec.error_message) == ("skipped", "opted out: replied STOP"), campaign.status
        assert counts(campaign)["skipped"] == 1
        assert counts(campaign)["pending"] == status(campaign)["total"] - 1
    assert int(Shard.get(*Shard.key(draft.id, 0)).webhook_moves) == webhook_moves + 1
    assert by_phone(finished)[phone(1)].status == "pending"  # a cancelled campaign is left as it ended
    assert by_phone(draft)[phone(2)].status == "pending" and counts(draft)["pending"] == 2

    # Later campaigns: the import drops the number.
    other = service.create_campaign(service.CampaignSpec(name="next", phone_number_id=NUMBER_ID, template=TEMPLATE),
                                    settings())
    report = service.import_recipients(other.id, imports.parse_items(
        [{"phone": "+" + phone(n), "variables": ["x"]} for n in (1, 5)], 1))
    assert (report["accepted"], report["suppressed"]) == (1, 1)


def test_a_replayed_stop_changes_nothing(stack, post):
    campaign = imported_campaign([1, 2])
    assert post(inbound(text_message(phone(1), "STOP")))["opt_outs"] == 1
    first = Suppression.get(*Suppression.key(phone(1)))
    shard = Shard.get(*Shard.key(campaign.id, 0))
    assert post(inbound(text_message(phone(1), "STOP")))["opt_outs"] == 1  # Meta retries; or the person, again
    assert post(inbound(button_message(phone(1), "UNSUBSCRIBE")))["opt_outs"] == 1
    again = Suppression.get(*Suppression.key(phone(1)))
    assert (again.created_at, again.reason, again.suppressed_at) == (first.created_at, first.reason,
                                                                     first.suppressed_at)
    after = Shard.get(*Shard.key(campaign.id, 0))
    assert (after.skipped, after.webhook_moves) == (shard.skipped, shard.webhook_moves) == (1, shard.webhook_moves)
    assert counts(campaign)["skipped"] == 1 and counts(campaign)["pending"] == 1


def test_a_message_that_is_no_opt_out_writes_nothing(stack, post):
    campaign = imported_campaign([1])
    before = Shard.get(*Shard.key(campaign.id, 0))
    for message in (text_message(phone(1), "stop it"), text_message(phone(1), "Hi! When is the sale?"),
                    button_message(phone(1), "Yes please"), interactive_reply(phone(1), "more", "Tell me more")):
        assert post(inbound(message)) == {"statuses": 0}
    assert suppressions.find(phone(1)) is None
    assert by_phone(campaign)[phone(1)].status == "pending"
    after = Shard.get(*Shard.key(campaign.id, 0))
    assert (after.skipped, after.webhook_moves) == (before.skipped, before.webhook_moves)


def test_a_claimed_recipient_is_left_to_its_send(stack, post):
    campaign = imported_campaign([1, 2])
    rec = by_phone(campaign)[phone(1)]
    assert ledger.claim(rec, "batch-1", time.time())
    post(inbound(text_message(phone(1), "STOP")))
    assert by_phone(campaign)[phone(1)].status == "sending"  # on the wire: its checkpoint settles it
    assert counts(campaign)["skipped"] == 0
    assert suppressions.find(phone(1)) is not None


def _one_shard_event(monkeypatch, campaign) -> dict:
    events: list[dict] = []
    monkeypatch.setattr(invoker, "invoke_sender", lambda _settings, event: events.append(event) or True)
    service.send(campaign.id, settings())
    return events[0]


def test_a_recipient_skipped_between_the_scan_and_its_claim_is_not_sent_and_the_campaign_completes(
        stack, post, monkeypatch):
    """The batch read the recipient pending; the STOP lands before its claim: the claim (conditioned on
    pending) loses, nothing is sent to it, and the batch finishes the shard with exact counts."""
    campaign = imported_campaign(list(range(1, 11)))
    event = _one_shard_event(monkeypatch, campaign)
    target = by_phone(campaign)[phone(7)]
    claim, lost = ledger.claim, []

    def stop_first(rec, owner, now):
        if rec.phone == target.phone:
            post(inbound(text_message(rec.phone, "STOP")))
            lost.append(not claim(rec, owner, now))
            return not lost[-1]
        return claim(rec, owner, now)

    monkeypatch.setattr(ledger, "claim", stop_first)
    report = sender.run_batch(event, lambda: 60.0, settings())
    assert report["outcome"] == "done" and lost == [True]
    assert target.callback_key not in {s["callback"] for s in stack.fake.sends()}
    answer = status(campaign)
    assert answer["status"] == "completed"
    assert {k: v for k, v in answer["counts"].items() if v} == {"sent": 9, "skipped": 1}
    assert audit(campaign, stack.fake)["statuses"] == {"sent": 9, "skipped": 1}


def test_131050_at_send_time_skips_the_number_in_the_other_campaigns(make_stack):
    stack = make_stack(with_scheduler=False, fake_latency_ms=5)
    stack.fake.configure(reject_numbers={phone(1): 131050})
    sending, later = imported_campaign([1, 2, 3]), imported_campaign([1, 4])
    service.send(sending.id, settings())
    wait_until(lambda: status(sending)["status"] == "completed", 60, "the campaign to complete")
    assert by_phone(sending)[phone(1)].status == "failed"
    item = Suppression.get(*Suppression.key(phone(1)))
    assert item.source == "graph_131050" and "131050" in item.reason
    rec = by_phone(later)[phone(1)]
    assert (rec.status, rec.error_message) == ("skipped", item.reason)
    assert counts(later)["skipped"] == 1 and counts(later)["pending"] == 1


def test_a_stop_while_a_campaign_is_being_sent_by_real_processes(make_stack):
    """The whole path: sender processes sending slowly, Meta's signed inbound STOP through the local
    gateway, the campaign completing with that recipient skipped and never received by the provider."""
    stack = make_stack(api_port=0, fake_latency_ms=5, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard=False)
    campaign = imported_campaign(list(range(1, 21)), rate=5)
    last = recipients(campaign)[-1]
    service.send(campaign.id, settings())
    wait_until(lambda: len(stack.fake.sends()) >= 3, 30, "some sends")
    assert Recipient.get(last.PK, last.SK, consistent_read=True).status == "pending"
    body = json.dumps(inbound(text_message(last.phone, "STOP")), separators=(",", ":")).encode()
    answer = requests.post(f"{stack.gateway.url}/webhook", data=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature_header(body, stack.secret["app_secret"])})
    assert answer.status_code == 200 and answer.json()["opt_outs"] == 1
    wait_until(lambda: status(campaign)["status"] == "completed", 60, "the campaign to complete")
    assert last.callback_key not in {s["callback"] for s in stack.fake.sends()}
    result = audit(campaign, stack.fake)
    assert result["statuses"] == {"sent": 19, "skipped": 1} and result["lost"] == 0 and result["duplicates"] == {}
    assert {k: v for k, v in status(campaign)["counts"].items() if v and k in ("sent", "skipped", "pending",
                                                                                "failed")} == {"sent": 19, "skipped": 1}


def test_a_persons_put_and_delete(stack):
    campaign = imported_campaign([1, 2])
    added, skipped = suppressions.suppress(phone(2), suppressions.person_reason("asked by phone"), "person")
    assert (added, skipped) == (True, 1)
    assert by_phone(campaign)[phone(2)].error_message == "suppressed by a person: asked by phone"
    assert suppressions.suppress(phone(2), "again", "person") == (False, 0)
    assert suppressions.remove(phone(2)) and not suppressions.remove(phone(2))
    assert by_phone(campaign)[phone(2)].status == "skipped"  # taking it off the list does not un-skip
    assert counts(campaign)["skipped"] == 1
