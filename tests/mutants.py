"""`make mutants`: break each mechanism behind an invariant and see the tests that guard it fail.

Each mutation is a small named edit of the product (a condition dropped, a call removed, a number
ignored). The runner copies the checkout to a scratch folder once, applies one mutation at a time,
runs only the tests that should catch it, and puts the file back. A mutation is caught when pytest
reports a failed test; it survived when they all pass; anything else (the edit no longer matches
the code, pytest could not run) is an error. Exit status: 0 only if every mutation was caught.

    .venv/bin/python -m tests.mutants                 # every mutation
    .venv/bin/python -m tests.mutants claim-condition-dropped hand-off-removed
    .venv/bin/python -m tests.mutants --list

Slow (the crash tests start real processes), so not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAMPAIGNS = "layers/common/python/campaigns"


@dataclass(frozen=True)
class Mutation:
    name: str
    invariant: str  # the row of README's table
    path: str
    edits: tuple[tuple[str, str], ...]  # (old, new): each old must occur in the file exactly once
    tests: tuple[str, ...]  # pytest node ids that must catch it


def edit(old: str, new: str) -> tuple[str, str]:
    return old, new


MUTATIONS = (
    Mutation(
        "completes-with-a-shard-open", "1 nothing lost", f"{CAMPAIGNS}/lifecycle.py",
        (edit("    if item.open_shards:\n        return\n", "    if False:\n        return\n"),
         edit("        condition=Campaign.open_shards.does_not_exist(),", "        condition=None,")),
        ("tests/test_sending.py::test_a_pair_rate_refusal_waits_six_seconds_and_the_campaign_completes_only_after_it",),
    ),
    Mutation(
        "claim-condition-dropped", "2 no duplicate", f"{CAMPAIGNS}/ledger.py",
        (edit("""        (
            (Recipient.status == R.PENDING.value)
            & (Recipient.not_before.does_not_exist() | (Recipient.not_before <= now))
        )
        | _claimed_by(owner),""", "        Recipient.status.exists(),"),),
        ("tests/test_ledger.py",),
    ),
    Mutation(
        "token-swap-dropped", "2 no duplicate", f"{CAMPAIGNS}/lease.py",
        (edit("        Shard.lease_owner == token,\n", "        Shard.lease_token == token,\n"),),
        ("tests/test_lease.py",
         "tests/test_crash.py::test_the_same_event_delivered_twice_sends_nothing_extra"),
    ),
    Mutation(
        "own-clock-check-removed", "2 no duplicate", f"{CAMPAIGNS}/sending.py",
        (edit("""        if not self.lease.usable():
            ledger.unclaim(rec, owner, None, count_attempt=False)""", """        if False:
            ledger.unclaim(rec, owner, None, count_attempt=False)"""),),
        ("tests/test_sending.py::test_a_batch_whose_own_clock_passed_its_lease_between_claim_and_post_does_not_post",
         "tests/test_crash.py::test_zombie_frozen_past_its_lease_starts_no_send_after_it_wakes"),
    ),
    Mutation(
        "checkpoint-fence-dropped", "2 no duplicate", f"{CAMPAIGNS}/ledger.py",
        (edit("(_claimed_by(owner) & Recipient.failed_at.does_not_exist())", "(Recipient.failed_at.does_not_exist())"),),
        ("tests/test_ledger.py",),
    ),
    Mutation(
        "renewal-fence-dropped", "2 no duplicate", f"{CAMPAIGNS}/lease.py",
        (edit("        held_under(lease) & _halts_are(lease.halts_seen),", "        _halts_are(lease.halts_seen),"),),
        ("tests/test_lease.py",),
    ),
    Mutation(
        "orphan-resent", "3 honest about the gap", f"{CAMPAIGNS}/ledger.py",
        (edit("""            [Recipient.status.set(R.IN_DOUBT.value), Recipient.in_doubt_at.set(now)],
            _claimed_by(owner) & Recipient.wamid.does_not_exist(),""",
              """            [Recipient.status.set(R.PENDING.value), Recipient.claimed_by.remove()],
            _claimed_by(owner) & Recipient.wamid.does_not_exist(),"""),),
        ("tests/test_ledger.py",
         "tests/test_crash.py::test_kill_between_post_and_checkpoint_leaves_in_doubt_never_resent"),
    ),
    Mutation(
        "grace-ignored", "3 honest about the gap", f"{CAMPAIGNS}/progress.py",
        (edit("    return in_doubt_since + grace_seconds", "    return in_doubt_since"),
         edit("    return now - grace_seconds", "    return now")),
        ("tests/test_crash.py::test_in_doubt_is_resent_after_grace_under_policy_resend",),
    ),
    Mutation(
        "checkpoint-skipped", "4 durable progress", f"{CAMPAIGNS}/sending.py",
        (edit("            if ledger.mark_sent(rec, owner, response.wamid, now):", "            if True:"),),
        ("tests/test_sending.py::test_campaign_is_sent_completely_once",),
    ),
    Mutation(
        "heartbeat-renews-nothing", "5 bounded stall", f"{CAMPAIGNS}/heartbeat.py",
        (edit("""                leases.renew(self.lease, self.settings, actions)
                break""", """                break"""),),
        ("tests/test_sending.py::test_a_batch_longer_than_its_lease_keeps_it_by_heartbeats",),
    ),
    Mutation(
        "tick-ignores-expired-leases", "5 bounded stall", f"{CAMPAIGNS}/recovery.py",
        (edit("Shard.due.query(DUE_SHARD, Shard.due_at < now)", "Shard.due.query(DUE_SHARD, Shard.due_at < 0)"),),
        ("tests/test_crash.py::test_zombie_frozen_past_its_lease_starts_no_send_after_it_wakes",),
    ),
    Mutation(
        "on-failure-ignored", "5 bounded stall", f"{CAMPAIGNS}/recovery.py",
        (edit("    taken = start_shard(event.campaign_id, event.shard, settings, condition)", "    taken = False"),),
        ("tests/test_crash.py::test_a_killed_batch_reported_by_lambda_is_taken_over_with_no_schedule",),
    ),
    Mutation(
        "hand-off-removed", "6 time-bounded batches", f"{CAMPAIGNS}/progress.py",
        (edit("""    if stop == Stop.TIME and made_progress:
        return Ending.HAND_OFF""", """    if False:
        return Ending.HAND_OFF"""),),
        ("tests/test_sending.py::test_a_campaign_longer_than_a_batch_completes_through_hand_offs_alone",),
    ),
    Mutation(
        "hop-guard-removed", "6 time-bounded batches", f"{CAMPAIGNS}/progress.py",
        (edit("    if stop == Stop.TIME and made_progress:", "    if stop == Stop.TIME:"),),
        ("tests/test_sending.py::test_a_batch_out_of_time_before_any_progress_does_not_hand_off",),
    ),
    Mutation(
        "stop-margin-ignored", "6 time-bounded batches", f"{CAMPAIGNS}/sender.py",
        (edit("if self.remaining() < self.settings.stop_margin_seconds:", "if self.remaining() < 0:"),),
        ("tests/test_sending.py::test_a_campaign_longer_than_a_batch_completes_through_hand_offs_alone",),
    ),
    Mutation(
        "aimd-off", "7 polite to the provider", f"{CAMPAIGNS}/sender.py",
        (edit("""            if kind == Kind.THROTTLED:
                self.limiter.throttled()""", """            if False:
                self.limiter.throttled()"""),),
        ("tests/test_crash.py::test_throughput_storm_slows_the_sender_and_fails_nobody",),
    ),
    Mutation(
        "pair-rate-not-waited", "7 polite to the provider", f"{CAMPAIGNS}/sending.py",
        (edit("delay = max(delay, 6.0)", "delay = delay"),),
        ("tests/test_sending.py::test_a_pair_rate_refusal_waits_six_seconds_and_the_campaign_completes_only_after_it",),
    ),
    Mutation(
        "retries-at-two-layers", "7 polite to the provider", f"{CAMPAIGNS}/whatsapp.py",
        (edit("from requests.adapters import HTTPAdapter\n", "from requests.adapters import HTTPAdapter, Retry\n"),
         edit("max_retries=0)", "max_retries=Retry(total=2, status_forcelist=(500, 503), allowed_methods=None, "
                                "raise_on_status=False))")),
        ("tests/test_sending.py::test_a_retryable_error_is_retried_by_the_sender_alone_one_request_per_attempt",),
    ),
    Mutation(
        "backoff-without-delay", "7 polite to the provider", f"{CAMPAIGNS}/ratelimit.py",
        (edit("    return (rng or random).uniform(0, ceiling)", "    return 0.0"),),
        ("tests/test_rules.py",),
    ),
    Mutation(
        "190-made-retryable", "8 errors classified once", f"{CAMPAIGNS}/graph_errors.py",
        (edit("    190: (ErrorClass.FATAL,", "    190: (ErrorClass.RETRYABLE,"),),
        ("tests/test_rules.py",
         "tests/test_crash.py::test_fatal_error_pauses_the_campaign_and_stops_sending"),
    ),
    Mutation(
        "tick-made-a-scan", "9 cheap when idle", f"{CAMPAIGNS}/recovery.py",
        (edit("    stuck = list(Shard.due.query(DUE_SHARD, Shard.due_at < now))",
              "    stuck = [s for s in Shard.scan(consistent_read=True)\n"
              "             if s.due_kind == DUE_SHARD and s.due_at is not None and s.due_at < now]"),),
        ("tests/test_costs.py::test_an_idle_tick_reads_the_same_however_many_campaigns_have_finished",),
    ),
    Mutation(
        "transaction-per-write", "10 no hot keys", f"{CAMPAIGNS}/models.py",
        (edit("    type(item)._get_connection().update_item(item.PK, range_key=item.SK, actions=actions, "
              "condition=condition)",
              "    from pynamodb.transactions import TransactWrite\n\n"
              "    with TransactWrite(connection=type(item)._get_connection().connection) as transaction:\n"
              "        transaction.update(item, actions=actions, condition=condition)"),),
        ("tests/test_costs.py::test_a_message_costs_two_writes_and_no_transaction",),
    ),
    Mutation(
        "one-shard-for-any-rate", "10 no hot keys", f"{CAMPAIGNS}/service.py",
        (edit("    return max(1, math.ceil(rate / settings.shard_rate))", "    return 1"),),
        ("tests/test_costs.py::test_a_1000_mps_campaign_spreads_its_recipients_over_13_shard_partitions",),
    ),
    Mutation(
        "number-not-shared", "7 polite to the provider", f"{CAMPAIGNS}/budget.py",
        (edit("        return fair_shares(asks, limit)[self.shard_key]", "        return self.ask"),),
        ("tests/test_sending.py::test_campaigns_on_one_number_share_its_throughput_and_another_number_keeps_its_own",),
    ),
    Mutation(
        "messaging-limit-ignored", "7 polite to the provider", f"{CAMPAIGNS}/sending.py",
        (edit("        if self.reach is not None and not self.reach.admit(rec.phone):", "        if False:"),),
        ("tests/test_sending.py::test_a_campaign_at_its_portfolios_messaging_limit_waits_parked_and_goes_on_as_the_window_rolls",),
    ),
    Mutation(
        "user-counted-twice", "7 polite to the provider", f"{CAMPAIGNS}/reach.py",
        (edit("                        Reach.reached_at.does_not_exist() | (Reach.reached_at <= now - self.window))",
              "                        None)"),),
        ("tests/test_reach.py",),
    ),
    Mutation(
        "number-token-ignored", "8 errors classified once", f"{CAMPAIGNS}/sender.py",
        (edit("        secret = self.budget.number.secret if self.budget.number else None", "        secret = None"),),
        ("tests/test_sending.py::test_a_number_of_another_account_sends_with_its_own_token",),
    ),
    Mutation(
        "event-resumes-a-persons-pause", "8 errors classified once", f"{CAMPAIGNS}/service.py",
        (edit('        if campaign.status != CampaignStatus.PAUSED or campaign.paused_by != "provider" or len(remaining) == len(current):',
              "        if campaign.status != CampaignStatus.PAUSED:"),
         edit('            resume(campaign_id, settings, only_if_paused_by="provider", cause=cause,\n'
              "                   condition=holds.unchanged_since(campaign.holds_version))",
              "            resume(campaign_id, settings, cause=cause)")),
        ("tests/test_sending.py::test_a_template_meta_pauses_pauses_its_campaigns_and_its_unpause_resumes_only_those",),
    ),
    Mutation(
        "restriction-pauses-every-account", "8 errors classified once", f"{CAMPAIGNS}/provider_events.py",
        (edit("lambda c: accounts.get(c.phone_number_id) in (None, account_id))", "lambda c: True)"),),
        ("tests/test_sending.py::test_an_account_restriction_pauses_that_accounts_campaigns_until_its_expiration_then_they_go_on",),
    ),
    Mutation(
        "restriction-never-lifted", "8 errors classified once", f"{CAMPAIGNS}/service.py",
        (edit('    if not (campaign.status == CampaignStatus.PAUSED and campaign.paused_by == "provider"):',
              "    if True:"),),
        ("tests/test_sending.py::test_an_account_restriction_pauses_that_accounts_campaigns_until_its_expiration_then_they_go_on",),
    ),
    Mutation(
        "a-lift-resumes-despite-other-holds", "8 errors classified once", f"{CAMPAIGNS}/service.py",
        (edit("        if remaining:\n            if lifecycle.rewrite_holds(", "        if False:\n            if lifecycle.rewrite_holds("),),
        ("tests/test_holds.py",),
    ),
    Mutation(
        "a-paused-campaign-takes-no-second-hold", "8 errors classified once", f"{CAMPAIGNS}/lifecycle.py",
        (edit('        if campaign.status != CampaignStatus.PAUSED or campaign.paused_by != "provider" or current.get(hold) == entry[hold]:',
              "        if True:"),),
        ("tests/test_holds.py",),
    ),
    Mutation(
        "holds-written-from-a-stale-read", "8 errors classified once", f"{CAMPAIGNS}/holds.py",
        (edit("    return Campaign.holds_version.does_not_exist() if version is None else Campaign.holds_version == version",
              "    return Campaign.PK.exists()"),),
        ("tests/test_holds.py::test_a_change_of_holds_made_from_an_older_read_is_refused",),
    ),
    Mutation(
        "opt-out-not-skipped", "7 polite to the provider", f"{CAMPAIGNS}/suppressions.py",
        (edit("    if not write_if(rec, [Recipient.status.set(R.SKIPPED.value), Recipient.error_message.set(reason)],",
              "    if True or not write_if(rec, [Recipient.status.set(R.SKIPPED.value), "
              "Recipient.error_message.set(reason)],"),),
        ("tests/test_suppressions.py::test_a_stop_while_a_campaign_is_being_sent_by_real_processes",
         "tests/test_suppressions.py::test_a_stop_skips_the_senders_pending_recipient_in_every_campaign_not_finished"),
    ),
    Mutation(
        "opt-out-keyword-loosened", "7 polite to the provider", f"{CAMPAIGNS}/suppressions.py",
        (edit("                                and (key := keyword_key(text)) in keywords), None)",
              "                                and (key := next((k for k in keywords if k in keyword_key(text)), "
              "'')) in keywords), None)"),),
        ("tests/test_suppressions.py::test_other_texts_are_not_opt_outs",),
    ),
    Mutation(
        "send-window-ignored", "7 polite to the provider", f"{CAMPAIGNS}/sender.py",
        (edit("        if self.hours is None or self.hours.is_open(now):", "        if True:"),),
        ("tests/test_sending.py::test_outside_its_send_window_a_campaign_sends_nothing_and_says_until_when_it_waits",),
    ),
    Mutation(
        "sends-after-expiry", "1 nothing lost", f"{CAMPAIGNS}/sending.py",
        (edit("        return windows.expired(self.campaign.expires_at, time.time())", "        return False"),),
        ("tests/test_sending.py::test_after_its_expiry_a_campaign_sends_nothing_and_the_rest_ends_expired",),
    ),
    Mutation(
        "expired-left-pending", "1 nothing lost", f"{CAMPAIGNS}/batch_end.py",
        (edit("        elif decided == Ending.EXPIRE and self._expire_pending():",
              "        elif decided == Ending.EXPIRE and False:"),),
        ("tests/test_sending.py::test_after_its_expiry_a_campaign_sends_nothing_and_the_rest_ends_expired",),
    ),
    Mutation(
        "wait-recorded-per-shard", "history (not an invariant)", f"{CAMPAIGNS}/lifecycle.py",
        (edit('    if old is not None and _text(old, "waiting_reason") != reason:', "    if old is not None:"),),
        ("tests/test_history.py::test_a_wait_is_recorded_once_however_many_shards_park_and_again_when_its_reason_changes",),
    ),
    Mutation(
        "provider-resume-recorded-as-a-persons", "history (not an invariant)", f"{CAMPAIGNS}/service.py",
        (edit('                      condition, by=by, cause=cause)',
              '                      condition, cause=cause)'),),
        ("tests/test_history.py::test_a_template_meta_pauses_leaves_the_providers_pause_and_its_unpause_the_resume",),
    ),
    Mutation(
        "sent-status-always-written", "10 no hot keys", f"{CAMPAIGNS}/statuses.py",
        (edit('    elif kind == "sent" and (known := _nothing_new(target, wamid)) is not None:',
              '    elif False:'),),
        ("tests/test_costs.py::test_a_status_writes_only_what_it_changes",),
    ),
    Mutation(
        "earlier-imports-not-looked-up", "2 no duplicate", f"{CAMPAIGNS}/imports.py",
        (edit("    buckets = sorted({bucket_of(n) for n in wanted})\n", "    buckets = []\n"),),
        ("tests/test_number_books.py::test_whatever_the_imports_a_campaign_holds_each_number_once",),
    ),
    Mutation(
        "uncommitted-book-counts", "2 no duplicate", f"{CAMPAIGNS}/imports.py",
        (edit("for book in _books(campaign_id, bucket) if book.import_id in committed_imports]",
              "for book in _books(campaign_id, bucket)]"),),
        ("tests/test_number_books.py::test_whatever_the_imports_a_campaign_holds_each_number_once",),
    ),
    Mutation(
        "a-book-per-number", "10 no hot keys", f"{CAMPAIGNS}/imports.py",
        (edit("        buckets.setdefault(bucket_of(phone), {})[phone] = index", "        buckets.setdefault(phone, {})[phone] = index"),),
        ("tests/test_number_books.py::test_an_import_writes_a_book_per_bucket_each_under_a_write_unit",),
    ),
    Mutation(
        "claim-before-the-slot", "3 honest about the gap", f"{CAMPAIGNS}/sending.py",
        (edit("        paced = self.limiter.wait_for_slot()\n", "        paced = 0.0\n"),
         edit("        paced += self.limiter.leave()", "        paced += self.limiter.acquire()")),
        ("tests/test_sending.py::test_a_recipient_is_not_claimed_while_its_send_waits_for_a_rate_slot",),
    ),
    Mutation(
        "absence-never-proven", "3 honest about the gap", f"{CAMPAIGNS}/proof.py",
        (edit("    return latest_proven > claimed_at and now >= in_doubt_at + quiet", "    return False"),),
        ("tests/test_crash.py::test_a_late_status_for_a_send_resent_after_absence_is_counted_as_a_duplicate",),
    ),
    Mutation(
        "absence-without-webhooks", "3 honest about the gap", f"{CAMPAIGNS}/proof.py",
        (edit("    return latest_proven > claimed_at and now >= in_doubt_at + quiet",
              "    return now >= in_doubt_at + quiet"),),
        ("tests/test_crash.py::test_policy_auto_resends_nothing_while_webhooks_are_silent",),
    ),
    Mutation(
        "proof-not-recorded", "3 honest about the gap", f"{CAMPAIGNS}/statuses.py",
        (edit("        proof.record_proven_claim(_sending_number(target[0], number), claimed_at, time.time())",
              "        pass"),),
        ("tests/test_crash.py::test_a_late_status_for_a_send_resent_after_absence_is_counted_as_a_duplicate",),
    ),
    Mutation(
        "late-status-not-a-duplicate", "3 honest about the gap", f"{CAMPAIGNS}/statuses.py",
        (edit('    if "absent_proven_at" not in old or not wamid or not recorded or wamid == recorded:',
              "    if True:"),),
        ("tests/test_crash.py::test_a_late_status_for_a_send_resent_after_absence_is_counted_as_a_duplicate",),
    ),
    # The CSV export (docs/api.md, "Export"): not an invariant of the table, a promise of the route.
    Mutation(
        "export-cursor-skips-a-row", "export: every row once", f"{CAMPAIGNS}/export.py",
        (edit("""                if rows >= limit or (rows and size + grown > max_bytes):
                    return Page("".join(lines), rows, page_token([shard, key]))""",
              """                if rows >= limit or (rows and size + grown > max_bytes):
                    return Page("".join(lines), rows, page_token([shard, {"PK": raw["PK"], "SK": raw["SK"]}]))"""),),
        ("tests/test_export.py::test_pages_give_every_recipient_exactly_once_and_the_last_has_no_link",
         "tests/test_export.py::test_a_page_stops_at_its_byte_budget_and_the_next_goes_on_from_the_row_after"),
    ),
    Mutation(
        "export-formula-left-live", "export: cells as text", f"{CAMPAIGNS}/export.py",
        (edit("""    return "'" + value if value.startswith(FORMULA_STARTS) else value""", "    return value"),),
        ("tests/test_export.py::test_a_message_a_spreadsheet_would_evaluate_is_written_as_text",),
    ),
    # Issue 21: test sends, the Marketing Messages endpoint.
    Mutation(
        "endpoint-choice-ignored", "issue 21 marketing messages", f"{CAMPAIGNS}/whatsapp.py",
        (edit('    return f"/{phone_number_id}/{SendApi(api or SendApi.MESSAGES).value}"',
              '    return f"/{phone_number_id}/messages"'),),
        ("tests/test_sending.py::test_a_marketing_messages_campaign_sends_through_that_endpoint_and_completes",),
    ),
    Mutation(
        "test-send-names-a-recipient", "issue 21 test sends write nothing", f"{CAMPAIGNS}/models.py",
        (edit('    return f"{TEST_CALLBACK_PREFIX}{campaign_id}:{token}"', '    return f"{campaign_id}:0:0"'),),
        ("tests/test_test_sends.py::test_the_status_webhooks_of_a_test_send_change_nothing",),
    ),
    Mutation(
        "test-send-to-suppressed", "7 polite to the provider", f"{CAMPAIGNS}/test_sends.py",
        (edit("    opted_out = {row.phone: item for row in rows if (item := suppressions.find(row.phone)) is not None}",
              "    opted_out = {}"),),
        ("tests/test_test_sends.py::test_a_suppressed_number_is_not_sent_to_and_says_why",),
    ),
    # The webhook's front door is a public function URL (AuthType NONE), which passes any path and
    # method on: the handler's signature check and its one POST route are all that keep it safe.
    Mutation(
        "webhook-signature-unchecked", "the public webhook (not an invariant)", "functions/webhook/app.py",
        (edit("""        statuses.verify_signature(raw, event.headers.get("x-hub-signature-256"),
                                  whatsapp_secret(settings())["app_secret"])""", "        pass"),),
        ("tests/test_webhook.py::test_unsigned_or_badly_signed_bodies_change_nothing",),
    ),
    Mutation(
        "webhook-any-path", "the public webhook (not an invariant)", "functions/webhook/app.py",
        (edit('@app.post("/webhook")', '@app.post("/<path>")'),),
        ("tests/test_webhook.py::test_a_signed_status_at_another_path_or_method_changes_nothing",),
    ),
)


def scratch_copy() -> Path:
    """The checkout as it is now (tracked and new files, uncommitted changes included)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    root = Path(tempfile.mkdtemp(prefix="mutants-"))
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    return root


def apply(root: Path, mutation: Mutation) -> str:
    """Apply the edits; returns the original text. ValueError if an edit no longer matches the code."""
    path = root / mutation.path
    original = text = path.read_text()
    for old, new in mutation.edits:
        found = text.count(old)
        if found != 1:
            raise ValueError(f"{mutation.name}: {old.strip()[:60]!r} occurs {found} times in {mutation.path}")
        text = text.replace(old, new)
    path.write_text(text)
    return original


def run_tests(root: Path, tests: tuple[str, ...], log: Path) -> tuple[int, list[str]]:
    """pytest in the scratch copy, its domain package first on every process's path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root / "layers/common/python"), str(root)])
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    failed = re.findall(r"^FAILED (\S+)", log.read_text(), flags=re.MULTILINE)
    return done.returncode, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.invariant:26} {' '.join(m.tests)}")
        return 0
    root = scratch_copy()
    logs = Path(tempfile.mkdtemp(prefix="mutants-logs-"))
    print(f"# scratch copy {root}; pytest logs in {logs}", flush=True)
    bad = 0
    for m in chosen:
        started = time.monotonic()
        try:
            original = apply(root, m)
        except ValueError as error:
            print(f"ERROR    {m.name:32} {error}", flush=True)
            bad += 1
            continue
        try:
            code, failed = run_tests(root, m.tests, logs / f"{m.name}.log")
        finally:
            (root / m.path).write_text(original)
        took = time.monotonic() - started
        if code == 1 and failed:
            verdict, detail = "caught", f"by {failed[0]}"
        elif code == 0:
            verdict, detail = "SURVIVED", "every test passed"
            bad += 1
        else:
            verdict, detail = "ERROR", f"pytest exited {code}: see {logs / (m.name + '.log')}"
            bad += 1
        print(f"{verdict:8} {m.name:32} ({m.invariant}) {detail} [{took:.0f} s]", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    print(f"# {len(chosen) - bad} of {len(chosen)} caught", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
