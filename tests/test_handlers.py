"""The sender and recovery handlers, fed the sample events of events/ the way Lambda calls them."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from campaigns import lease as leases
from campaigns import lifecycle, service
from campaigns.config import settings
from campaigns.models import Campaign, Shard
from local.lambda_process import LambdaContext, load_handler
from tests.helpers import TEMPLATE, audit, status, wait_until

ROOT = Path(__file__).resolve().parent.parent


def handler(name: str):
    return load_handler(str(ROOT / "functions" / name / "app.py"), "lambda_handler", f"test-{name}")


def event(name: str) -> dict:
    return json.loads((ROOT / "events" / f"{name}.json").read_text())


def context(name: str, seconds: float = 60) -> LambdaContext:
    return LambdaContext(
        aws_request_id=str(uuid.uuid4()), function_name=name, function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
        memory_limit_in_mb="512", log_group_name=f"/aws/lambda/{name}", log_stream_name="test",
        deadline_ms=int((time.time() + seconds) * 1000),
    )


def demo_campaign(recipients: int = 30):
    """The campaign and shard lease that the sample events name (c-demo, shard 0, tok-demo)."""
    spec = service.CampaignSpec(name="demo", phone_number_id="1234567890", template=TEMPLATE)
    campaign = service.create_campaign(spec, settings(), campaign_id="c-demo")
    service.add_recipients(campaign.id, [service.RecipientRow(f"91987{n:07d}", [f"n{n}"])
                                         for n in range(recipients)])
    lifecycle.wake(campaign.id, [0])
    lifecycle.transition(campaign.id, "send", [Campaign.open_shards.set({0})])
    assert leases.hand_to(campaign.id, 0, "tok-demo", leases.free_or_expired(time.time()), settings())
    return campaign


def test_sender_handler_sends_the_sample_event_batch_and_completes(make_stack):
    stack = make_stack(with_scheduler=False, fake_latency_ms=5)
    campaign = demo_campaign()
    report = handler("sender")(event("sender"), context("sender"))
    assert report["outcome"] == "done" and report["sent"] == 30
    assert status(campaign)["status"] == "completed"
    assert audit(campaign, stack.fake)["duplicates"] == {}
    # The same event again (Lambda's at-least-once delivery): the lease is no longer that token's.
    assert handler("sender")(event("sender"), context("sender"))["outcome"] == "not_ours"
    assert stack.fake.stats()["accepted"] == 30


def test_recovery_takes_over_at_once_on_the_sample_failure_record(make_stack):
    stack = make_stack(with_scheduler=False, fake_latency_ms=5)
    campaign = demo_campaign()  # reserved for tok-demo; that batch "died" before it ran
    gen = int(Shard.get(*Shard.key("c-demo", 0)).lease_gen)
    assert handler("recovery")(event("recovery-on-failure"), context("recovery")) == {"taken_over": 1}
    assert int(Shard.get(*Shard.key("c-demo", 0)).lease_gen) > gen
    wait_until(lambda: status(campaign)["status"] == "completed", 60, "the new batch to finish")
    assert audit(campaign, stack.fake)["statuses"] == {"sent": 30}
    # The record delivered again: the lease is not tok-demo's any more, nothing happens.
    assert handler("recovery")(event("recovery-on-failure"), context("recovery")) == {"taken_over": 0}


def test_recovery_tick_ignores_live_leases_and_takes_expired_ones(make_stack):
    make_stack(with_scheduler=False, fake_latency_ms=5)
    demo_campaign()
    tick = handler("recovery")
    assert tick(event("recovery-schedule"), context("recovery"))["taken_over"] == 0  # lease still live
    from campaigns import recovery

    later = time.time() + settings().lease_seconds + 1
    assert recovery.tick(settings(), now=later)["taken_over"] == 1


def test_recovery_tick_starts_a_scheduled_campaign_when_its_time_comes(make_stack):
    stack = make_stack(with_scheduler=False, fake_latency_ms=5)
    spec = service.CampaignSpec(name="later", phone_number_id="1", template=TEMPLATE, send_at=time.time() + 3600)
    campaign = service.create_campaign(spec, settings())
    service.add_recipients(campaign.id, [service.RecipientRow(f"91987{n:07d}", ["x"]) for n in range(5)])
    from campaigns import recovery

    assert recovery.tick(settings())["scheduled_started"] == 0
    assert recovery.tick(settings(), now=time.time() + 3601)["scheduled_started"] == 1
    wait_until(lambda: status(campaign)["status"] == "completed", 60, "the scheduled campaign to be sent")
    assert stack.fake.stats()["accepted"] == 5
    assert recovery.tick(settings(), now=time.time() + 3601)["scheduled_started"] == 0
