"""The provider's holds (campaigns/holds.py): whatever Meta does to a campaign, in whatever order (a
template paused and unpaused, an account restricted until a time, a code of its own refused, the
restriction's end passing for recovery), and whatever a person does meanwhile, a campaign is paused
by the provider exactly while a cause it was paused for still holds, and goes on when the last one
lifts. Driven through the functions the webhook and the schedule call, on the table of template.yaml."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from campaigns import holds, lifecycle, numbers, provider_events, recovery, service
from campaigns.config import settings as app_settings
from campaigns.errors import Conflict

HOUR = 3600.0
_unique = itertools.count()

# A step: what Meta or a person does. Hours are counted from the run's start; a restriction lasts
# `hours` from the run's clock, a tick moves the clock `hours` on.
STEPS = st.one_of(
    st.just(("template_paused",)),
    st.just(("template_unpaused",)),
    st.tuples(st.just("restricted"), st.integers(1, 3)),
    st.tuples(st.just("tick"), st.integers(1, 3)),
    st.just(("spam_limit",)),  # a send refused with 131048: a hold no event lifts
    st.just(("person_pauses",)),
    st.just(("person_resumes",)),
)


class World:
    """One campaign sending (no batch: nothing to send) on a number of its own account, a template
    of its own, and what its status should be: who paused it, and the holds (name -> end)."""

    def __init__(self):
        n = next(_unique)
        self.template = {"name": f"offer_{n}", "language": "en_US", "components": []}
        self.account = f"acct{n}"
        self.phone_number_id = f"55500{n:05d}"
        numbers.configure(self.phone_number_id, 80, business_account_id=self.account)
        spec = service.CampaignSpec(name="holds", phone_number_id=self.phone_number_id, template=self.template)
        self.id = service.create_campaign(spec, app_settings()).id
        lifecycle.transition(self.id, "send")
        self.now = time.time()
        self.paused_by: str | None = None
        self.holds: dict[str, float | None] = {}

    def template_event(self, event: str, title: str | None = None) -> None:
        value = {"event": event, "message_template_name": self.template["name"],
                 "message_template_language": "en_US", "reason": "LOW_QUALITY"}
        if title:
            value["other_info"] = {"title": title}
        provider_events.apply_template_event(value, app_settings())

    def meta_holds(self, hold: str, until: float | None) -> None:
        if self.paused_by in (None, "provider"):
            self.paused_by = "provider"
            self.holds[hold] = until

    def meta_lifts(self, lifted) -> None:
        if self.paused_by == "provider":
            self.holds = {hold: until for hold, until in self.holds.items() if not lifted(hold, until)}
            self.paused_by = "provider" if self.holds else None

    def do(self, step: tuple) -> None:
        kind = step[0]
        template = holds.of_template(self.template)
        if kind == "template_paused":
            self.template_event("PAUSED")
            self.meta_holds(template, None)
        elif kind == "template_unpaused":
            self.template_event("APPROVED", title="UNPAUSE")
            self.meta_lifts(lambda hold, _: hold == template)
        elif kind == "restricted":
            # A second restriction of the account replaces the first one's end: Meta's newer word.
            until = round(self.now + step[1] * HOUR)
            expiration = {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": until}
            provider_events.apply_account_event(self.account, {"event": "ACCOUNT_RESTRICTION",
                                                               "restriction_info": [expiration]}, now=self.now)
            self.meta_holds(holds.account_hold(self.account), float(until))
        elif kind == "tick":
            self.now += step[1] * HOUR
            recovery.tick(app_settings(), now=self.now)
            self.meta_lifts(lambda _, until: until is not None and until <= self.now)
        elif kind == "spam_limit":
            lifecycle.pause_for_error(self.id, "(#131048) spam rate limit hit", 131048, self.template)
            self.meta_holds(holds.code_hold(131048), None)
        elif kind == "person_pauses" and self.paused_by is None:
            service.pause(self.id)
            self.paused_by = "person"
        elif kind == "person_resumes" and self.paused_by is not None:
            service.resume(self.id, app_settings())
            self.paused_by, self.holds = None, {}

    def check(self, after: list) -> None:
        campaign = service.get_campaign(self.id)
        where = f"after {after}"
        assert campaign.status == ("sending" if self.paused_by is None else "paused"), where
        assert campaign.paused_by == self.paused_by, where
        if self.paused_by != "provider":
            assert holds.of(campaign) == {} and campaign.paused_until is None, where
            return
        assert {h: e.get("until") for h, e in holds.of(campaign).items()} == self.holds, where
        ends = [u for u in self.holds.values() if u is not None]
        resumes_at = max(ends) if ends and len(ends) == len(self.holds) else None
        assert campaign.paused_until == resumes_at, where
        # Recovery looks again when the next hold with an end lifts, and not before.
        assert (campaign.due_at, campaign.due_kind is not None) == ((min(ends), True) if ends else (None, False)), where
        for entry in holds.of(campaign).values():
            assert entry["reason"] in campaign.paused_reason, where


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(STEPS, min_size=1, max_size=7))
# The two orders of the issue that brought holds: the template's unpause while the account is still
# restricted, and the restriction's end while the template is still paused.
@example([("template_paused",), ("restricted", 2), ("template_unpaused",), ("tick", 1), ("tick", 1)])
@example([("restricted", 1), ("template_paused",), ("tick", 2), ("template_unpaused",)])
@example([("spam_limit",), ("template_paused",), ("template_unpaused",), ("person_resumes",)])
def test_a_campaign_is_paused_by_the_provider_exactly_while_one_of_its_causes_holds(table, steps):
    world = World()
    for done, step in enumerate(steps, 1):
        world.do(step)
        world.check(steps[:done])


def test_a_template_unpause_while_the_account_is_restricted_leaves_it_paused_for_the_restriction(table):
    world = World()
    for step in [("template_paused",), ("restricted", 2), ("template_unpaused",)]:
        world.do(step)
    campaign = service.get_campaign(world.id)
    assert (campaign.status, campaign.paused_by) == ("paused", "provider")
    assert "restricted by Meta" in campaign.paused_reason and "PAUSED" not in campaign.paused_reason
    assert campaign.paused_until == round(world.now + 2 * HOUR)



def test_a_change_of_holds_made_from_an_older_read_is_refused(table):
    """What keeps two events from losing each other's hold, one interleaving at a time: a lift that
    read the campaign before another event added its hold writes nothing, the resume nor the rest."""
    world = World()
    world.do(("template_paused",))
    read_before = service.get_campaign(world.id)
    world.do(("restricted", 2))  # another event adds its hold after that read
    with pytest.raises(Conflict):
        service.resume(world.id, app_settings(), only_if_paused_by="provider",
                       condition=holds.unchanged_since(read_before.holds_version))
    account_only = {holds.account_hold(world.account): holds.hold("restricted", world.now + HOUR)}
    assert not lifecycle.rewrite_holds(world.id, account_only, read_before.holds_version, "a stale lift", "provider")
    world.check(["template paused", "restricted", "two stale writes"])

def test_holds_added_and_lifted_at_once_by_the_webhook_and_the_schedule_lose_none(table):
    """The template's events on one thread, the account's restrictions and the ticks that lift them on
    another, against one campaign: each change of its holds is conditioned on the holds it read, so
    none is lost to a write made from an older read. Both threads end by adding their hold: both remain."""
    world = World()
    rounds = 15

    def template_side():
        for _ in range(rounds):
            world.template_event("PAUSED")
            world.template_event("APPROVED", title="UNPAUSE")
        world.template_event("PAUSED")

    def account_side():
        for n in range(rounds + 1):
            at = world.now + n * 10 * HOUR  # each round in an hour of its own: a restriction, then its end
            restriction = {"restriction_type": "RESTRICTED_BIZ_INITIATED_MESSAGING", "expiration": at + HOUR}
            provider_events.apply_account_event(world.account, {"event": "ACCOUNT_RESTRICTION",
                                                                "restriction_info": [restriction]}, now=at)
            if n < rounds:
                recovery.tick(app_settings(), now=at + 2 * HOUR)

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(template_side), pool.submit(account_side)]:
            done.result()
    campaign = service.get_campaign(world.id)
    last_end = world.now + rounds * 10 * HOUR + HOUR
    assert (campaign.status, campaign.paused_by) == ("paused", "provider")
    assert {h: e.get("until") for h, e in holds.of(campaign).items()} == {
        holds.of_template(world.template): None, holds.account_hold(world.account): last_end}
    assert campaign.due_at == last_end and campaign.paused_until is None
