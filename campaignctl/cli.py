"""The commands of campaignctl (see the package's doc)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import IO

from campaignctl.client import DEFAULT_API_URL, ApiError, Client, Unreachable

ACTIONS = ("send", "pause", "resume", "cancel", "retry-failed")
ACTIVE = ("sending", "scheduled")
COUNT_NAMES = ("pending", "sent", "delivered", "read", "failed", "in_doubt", "skipped", "expired")
BAR_WIDTH = 30


# -- building the request --------------------------------------------------------------------------


def read_csv(path: str) -> tuple[bytes, int]:
    """The file's bytes and its number of template variables (columns after `phone`)."""
    with open(path, "rb") as stream:
        raw = stream.read()
    text = raw.decode("utf-8-sig", errors="replace")
    header = next(csv.reader(io.StringIO(text)), None)
    if not header:
        raise ValueError(f"{path} is empty: it needs a header line phone,var1,var2,...")
    if header[0].strip().lower() != "phone":
        raise ValueError(f"{path}: the first column must be `phone`, not {header[0]!r}")
    return raw, len(header) - 1


def template_for(name: str, language: str, variables: int, components_file: str | None = None) -> dict:
    """The template as the API takes it: given components, or a body with {{1}}..{{n}} for the CSV's columns."""
    if components_file:
        with open(components_file, encoding="utf-8") as stream:
            components = json.load(stream)
    elif variables:
        components = [{"type": "body",
                       "parameters": [{"type": "text", "text": f"{{{{{n}}}}}"} for n in range(1, variables + 1)]}]
    else:
        components = []
    return {"name": name, "language": language, "components": components}


# -- showing answers -----------------------------------------------------------------------------------


def progress_bar(campaign: dict, width: int = BAR_WIDTH) -> str:
    counts = campaign.get("counts") or {}
    total = int(campaign.get("total") or 0)
    done = sum(int(counts.get(k) or 0) for k in ("sent", "failed", "skipped", "in_doubt", "expired"))
    filled = int(width * done / total) if total else 0
    achieved = campaign.get("current_rate") or 0  # what the provider accepted over the last seconds
    pace = campaign.get("pace") or 0  # what the rate limiters allow: a ceiling
    eta = campaign.get("eta_seconds")
    line = (f"[{'#' * filled}{'.' * (width - filled)}] {100 * (done / total if total else 0):5.1f}% "
            f"{done}/{total} · {campaign.get('status')} · achieved {achieved:g} msg/s · pace {pace:g} msg/s")
    if eta is not None:
        line += f" · ETA {eta}s"
    return line


def describe(campaign: dict) -> str:
    counts = campaign.get("counts") or {}
    lines = [
        f"{campaign['id']}  {campaign.get('name')!s}  [{campaign.get('status')}]",
        "  " + progress_bar(campaign),
        "  " + "  ".join(f"{k.replace('_', ' ')} {int(counts.get(k) or 0)}" for k in COUNT_NAMES),
    ]
    template = campaign.get("template") or {}
    lines.append(f"  template {template.get('name')} ({template.get('language')}) · rate {campaign.get('rate')} "
                 f"msg/s · {campaign.get('shards')} shard(s) · in-doubt policy {campaign.get('in_doubt_policy')}")
    moments = [f"{name} {campaign[f'{name}_at']}" for name in ("created", "started", "completed")
               if campaign.get(f"{name}_at")]
    if campaign.get("send_at"):
        moments.insert(1, f"scheduled for {campaign['send_at']}")
    if campaign.get("expires_at"):
        moments.append(f"expires {campaign['expires_at']}")
    lines.append("  " + " · ".join(moments))
    if campaign.get("stuck_shards"):
        lines.append(f"  stuck shards: {campaign['stuck_shards']} (recovery takes them over)")
    if campaign.get("paused_reason"):
        lines.append(f"  paused: {campaign['paused_reason']}")
    if campaign.get("last_error"):
        lines.append(f"  last error: {campaign['last_error']}")
    return "\n".join(lines)


def event_line(event: dict) -> str:
    """One event of a campaign's history: time, kind, who, cause (and until when, the error code)."""
    line = f"{event['at']}  {event['kind']:<12} {event['by']:<8} {event['cause']}"
    if event.get("until"):
        line += f" (until {event['until']})"
    if event.get("code") is not None:
        line += f" [code {event['code']}]"
    return line


def with_last_event(client: Client, campaign: dict) -> str:
    """The status, and the latest event of its history (what last happened to it, and why)."""
    text = describe(campaign)
    latest = (client.events(campaign["id"], limit=1, newest_first=True).get("items") or [None])[0]
    return text + (f"\n  last event: {event_line(latest)}" if latest else "")


def import_summary(report: dict) -> str:
    text = (f"{report.get('accepted', 0)} recipients imported ({report.get('total', 0)} in the campaign), "
            f"{report.get('rejected_count', 0)} rejected, {report.get('duplicates', 0)} duplicates dropped, "
            f"{report.get('suppressed', 0)} suppressed")
    for rejection in (report.get("rejected") or [])[:5]:
        where = f"line {rejection['line']}" if "line" in rejection else f"row {rejection.get('index')}"
        text += f"\n  {where}: {rejection.get('message') or rejection.get('reason') or rejection}"
    more = int(report.get("rejected_count") or 0) - 5
    if more > 0:
        text += f"\n  … and {more} more rejected rows"
    return text


# -- commands --------------------------------------------------------------------------------------------


def cmd_create(client: Client, args, out: IO[str]) -> int:
    raw, variables = read_csv(args.csv)
    spec = {
        "name": args.name,
        "phone_number_id": args.phone_number_id,
        "template": template_for(args.template_name, args.language, variables, args.components),
        "rate": args.rate,
        "in_doubt_policy": args.in_doubt_policy,
    }
    if args.expires_at:
        spec["expires_at"] = args.expires_at
    if args.api != "messages":
        spec["api"] = args.api
    campaign = client.create(spec)
    campaign_id = campaign["id"]
    try:
        report = client.import_csv(campaign_id, raw)
    except ApiError as error:
        print(f"created campaign {campaign_id} (draft), but its recipients were refused: {error}", file=sys.stderr)
        if args.json:
            print(json.dumps({"campaign": campaign, "import_error": str(error)}), file=out)
        return 1
    sent = client.action(campaign_id, "send") if args.send else None
    if args.json:
        print(json.dumps({"campaign": sent or client.get(campaign_id), "import": report}), file=out)
        return 0
    print(f"created campaign {campaign_id} ({(sent or campaign)['status']})", file=out)
    print(import_summary(report), file=out)
    if not args.send:
        print(f"start it with: python -m campaignctl send {campaign_id}", file=out)
    return 0


def cmd_action(client: Client, args, out: IO[str]) -> int:
    answer = client.action(args.id, args.command)
    if args.json:
        print(json.dumps(answer), file=out)
    else:
        extra = f" ({answer['reopened_shards']} shard(s) reopened)" if "reopened_shards" in answer else ""
        print(f"{args.command}: campaign {answer['id']} is {answer['status']}{extra}", file=out)
        print(describe(answer), file=out)
    return 0


def cmd_status(client: Client, args, out: IO[str]) -> int:
    campaign = client.get(args.id)
    if not args.watch:
        print(json.dumps(campaign) if args.json else with_last_event(client, campaign), file=out)
        return 0
    tty = out.isatty()
    last = None
    try:
        while True:
            line = json.dumps(campaign) if args.json else progress_bar(campaign)
            if tty and not args.json:
                out.write("\r\x1b[2K" + line)
                out.flush()
            elif line != last:
                print(line, file=out, flush=True)
            last = line
            if campaign["status"] not in ACTIVE:
                break
            time.sleep(args.interval)  # the refresh period of a display, not a synchronisation
            campaign = client.get(args.id)
    except KeyboardInterrupt:
        pass
    if tty and not args.json:
        out.write("\n")
    if not args.json:
        print(with_last_event(client, campaign), file=out)
    return 0


def cmd_events(client: Client, args, out: IO[str]) -> int:
    page = client.events(args.id, args.limit, args.next, newest_first=args.newest)
    if args.json:
        print(json.dumps(page), file=out)
        return 0
    items = page.get("items") or []
    print("\n".join(event_line(e) for e in items) if items else "no event yet", file=out)
    if page.get("next"):
        print(f"more: --next {page['next']}", file=out)
    return 0


def cmd_list(client: Client, args, out: IO[str]) -> int:
    page = client.list(args.status, args.limit, args.next)
    if args.json:
        print(json.dumps(page), file=out)
        return 0
    items = page.get("items") or []
    if not items:
        print("no campaign" + (f" with status {args.status}" if args.status else ""), file=out)
    else:
        print(f"{'ID':<18} {'STATUS':<10} {'RECIPIENTS':>10}  {'TEMPLATE':<20} {'CREATED (UTC)':<29} NAME", file=out)
        for c in items:
            print(f"{c['id']:<18} {c['status']:<10} {c.get('recipients_reserved', 0):>10}  "
                  f"{str(c.get('template_name')):<20} {str(c.get('created_at')):<29} {c.get('name')}", file=out)
    if page.get("next"):
        print(f"more: --next {page['next']}", file=out)
    return 0


def cmd_recipients(client: Client, args, out: IO[str]) -> int:
    page = client.recipients(args.id, args.status, args.limit, args.next)
    if args.json:
        print(json.dumps(page), file=out)
        return 0
    for r in page.get("items") or []:
        error = f" error {r['error_code']} ({r['error_class']}): {r.get('error_message') or ''}" if r.get("error_code") else ""
        print(f"{r['key']:<32} +{r['phone']:<16} {r['status']:<9} wamid {r.get('wamid') or '-'}{error}", file=out)
    if page.get("next"):
        print(f"more: --next {page['next']}", file=out)
    return 0


def describe_number(n: dict) -> str:
    """One number on a few lines: its limits, who has its throughput, what its messaging limit leaves."""
    lines = [f"{n['phone_number_id']}: {n['throughput_mps']:g} msg/s ({'set' if n['configured'] else 'default'}), "
             f"{n['in_use_mps']:g} given out to {len(n['sending'])} shard(s)"]
    lines += [f"  campaign {s['campaign_id']} shard {s['shard']}: {s['share_mps']:g} of the {s['asks_mps']:g} msg/s "
              f"it asks" for s in n["sending"]]
    if n.get("messaging_limit"):
        lines.append(f"  messaging limit of portfolio {n['portfolio']}: {n['reached_24h']} of {n['messaging_limit']} "
                     f"users reached in 24 h, {n['left']} left" +
                     (f", next room at {n['next_room_at']}" if n.get("next_room_at") else ""))
    return "\n".join(lines)


def cmd_numbers(client: Client, args, out: IO[str]) -> int:
    if args.set:
        limits = {"throughput_mps": args.throughput, "messaging_limit": args.messaging_limit,
                  "portfolio": args.portfolio}
        answer = client.set_number(args.id, {k: v for k, v in limits.items() if v is not None})
        items = [answer]
    elif args.id:
        items = [client.number(args.id)]
    else:
        items = client.numbers()["items"]
    if args.json:
        print(json.dumps(items if not args.id else items[0]), file=out)
        return 0
    print("\n".join(describe_number(n) for n in items) if items else "no number configured", file=out)
    return 0


def describe_suppression(item: dict) -> str:
    return f"+{item['phone']:<16} {str(item.get('source')):<13} {item.get('created_at')}  {item.get('reason')}"


def cmd_suppressions(client: Client, args, out: IO[str]) -> int:
    if args.action == "list":
        page = client.suppressions(args.limit, args.next)
        if args.json:
            print(json.dumps(page), file=out)
            return 0
        items = page.get("items") or []
        print("\n".join(describe_suppression(i) for i in items) if items else "no number suppressed", file=out)
        if page.get("next"):
            print(f"more: --next {page['next']}", file=out)
    elif args.action == "show":
        item = client.suppression(args.phone)
        print(json.dumps(item) if args.json else describe_suppression(item), file=out)
    elif args.action == "add":
        item = client.suppress(args.phone, args.reason)
        if args.json:
            print(json.dumps(item), file=out)
        else:
            print(describe_suppression(item), file=out)
            print(f"{item.get('skipped_recipients', 0)} pending recipient(s) skipped", file=out)
    else:
        client.unsuppress(args.phone)
        if args.json:
            print(json.dumps({"removed": args.phone}), file=out)
        else:
            print(f"{args.phone} taken off the suppression list (recipients it skipped stay skipped)", file=out)
    return 0


def write_export(pages: Iterable[str], target: IO[str]) -> tuple[int, int]:
    """The export's pages as one CSV: the first page's header once, then each page's rows; (rows, pages)."""
    header, rows, count = None, 0, 0
    for body in pages:
        first, _, rest = body.partition("\r\n")
        if header is None:
            header = first
            target.write(first + "\r\n")
        elif first != header:
            raise ValueError(f"page {count + 1} has another header: {first[:80]!r}")
        target.write(rest)
        rows += sum(1 for _ in csv.reader(io.StringIO(rest, newline="")))
        count += 1
    return rows, count


def cmd_export(client: Client, args, out: IO[str]) -> int:
    pages = client.export_pages(args.id, args.status, args.limit)
    if args.output:
        part = f"{args.output}.part"
        try:
            with open(part, "w", encoding="utf-8", newline="") as target:
                rows, count = write_export(pages, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(part)  # never half an export under the name asked for
            raise
        os.replace(part, args.output)
    else:
        rows, count = write_export(pages, out)
    summary = {"campaign": args.id, "status": args.status, "rows": rows, "pages": count, "file": args.output}
    text = (f"{rows} recipient{'s' if rows != 1 else ''}{f' ({args.status})' if args.status else ''} written to "
            f"{args.output or 'stdout'} "
            f"({count} page{'s' if count != 1 else ''})")
    # The CSV on standard output keeps it to itself: the summary goes to standard error then.
    print(json.dumps(summary) if args.json else text, file=out if args.output else sys.stderr)
    return 0


# -- test sends and clones (issue 21) ----------------------------------------------------------------------

CLONE_PICKS = ("none", "all", "failed", "not_delivered", "not_read")


def numbers_to_test(args) -> list[dict]:
    """The numbers of `campaignctl test`: --phone (each with the --var values), or the rows of --csv."""
    if args.csv:
        with open(args.csv, encoding="utf-8-sig", newline="") as stream:
            records = [r for r in csv.reader(stream) if any(cell.strip() for cell in r)]
        if not records or records[0][0].strip().lower() != "phone":
            raise ValueError(f"{args.csv}: the first line must be the header phone,var1,var2,...")
        found = [{"phone": r[0], "variables": r[1:]} for r in records[1:]]
    else:
        found = [{"phone": phone, "variables": list(args.var or [])} for phone in args.phone or []]
    if not found:
        raise ValueError("name the numbers to test with --phone (one or more) or --csv FILE")
    return found


def describe_test_result(result: dict) -> str:
    if result.get("ok"):
        return f"+{result['phone']:<16} sent    {result.get('wamid')}"
    error = result.get("error") or {}
    code = f"{error.get('code')} " if error.get("code") is not None else ""
    return f"+{result['phone']:<16} FAILED  {code}({error.get('class')}): {error.get('message')}"


def cmd_test(client: Client, args, out: IO[str]) -> int:
    answer = client.test_send(args.id, numbers_to_test(args))
    results = answer.get("results") or []
    if args.json:
        print(json.dumps(answer), file=out)
    else:
        print("\n".join(describe_test_result(r) for r in results), file=out)
        print(f"{sum(1 for r in results if r.get('ok'))} of {len(results)} test send(s) accepted; the campaign's "
              "recipients and counts are unchanged", file=out)
    return 0 if all(r.get("ok") for r in results) else 1


def cmd_clone(client: Client, args, out: IO[str]) -> int:
    answer = client.clone(args.id, args.name, args.recipients)
    if args.json:
        print(json.dumps(answer), file=out)
        return 0
    print(f"cloned campaign {args.id} into {answer['id']} ({answer['status']}), recipients: {args.recipients}",
          file=out)
    if answer.get("import"):
        print(import_summary(answer["import"]), file=out)
    print(describe(answer), file=out)
    return 0


# -- the parser ------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m campaignctl", description="WhatsApp template campaigns "
                                   "over the HTTP API (local stack or deployed).")
    root.add_argument("--api-url", default=os.environ.get("CAMPAIGNS_API_URL", DEFAULT_API_URL),
                      help="the API (env CAMPAIGNS_API_URL, default %(default)s); not loopback = signed with SigV4")
    root.add_argument("--region", help="AWS region for SigV4 (default: AWS_REGION, the AWS config, or the URL)")
    root.add_argument("--json", action="store_true", help="print the API's JSON answers")
    commands = root.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="create a campaign and import its recipients from a CSV file")
    create.add_argument("--name", required=True)
    create.add_argument("--phone-number-id", required=True, help="the sending WhatsApp number's id")
    create.add_argument("--template-name", required=True, help="the approved template's name")
    create.add_argument("--language", default="en_US", help="template language code (default %(default)s)")
    create.add_argument("--csv", required=True, metavar="FILE",
                        help="header phone,var1,var2,...: one {{n}} of the template body per extra column")
    create.add_argument("--components", metavar="JSON_FILE",
                        help="the template's components as Graph takes them (default: a body with {{1}}..{{n}})")
    create.add_argument("--rate", type=int, default=80, help="messages per second (default %(default)s)")
    create.add_argument("--in-doubt-policy", choices=("auto", "skip", "resend"), default="auto",
                        help="a send a crash left in doubt: auto (sent again only once the status webhooks "
                             "prove it never arrived), skip (at most once) or resend (after the grace period)")
    create.add_argument("--expires-at", metavar="ISO_8601",
                        help="no send starts after it (e.g. 2030-01-31T20:00:00+05:30): what is pending then "
                             "ends expired")
    create.add_argument("--api", choices=("messages", "marketing_messages"), default="messages",
                        help="the Graph endpoint its sends go to (default %(default)s; marketing_messages: the "
                             "Marketing Messages API, marketing templates only)")
    create.add_argument("--send", action="store_true", help="start sending right away")
    create.set_defaults(run=cmd_create)

    for action in ACTIONS:
        command = commands.add_parser(action, help=f"{action} a campaign")
        command.add_argument("id")
        command.set_defaults(run=cmd_action)

    tested = commands.add_parser("test", help="send a campaign's template now to a few numbers (at most 10), "
                                 "leaving its recipients and counts as they are")
    tested.add_argument("id")
    tested.add_argument("--phone", action="append", help="a number to send to (repeat for more)")
    tested.add_argument("--var", action="append", help="the template's variables, in order, for every --phone "
                        "(repeat for each {{n}})")
    tested.add_argument("--csv", metavar="FILE", help="the numbers instead: header phone,var1,..., one per line")
    tested.set_defaults(run=cmd_test)

    cloned = commands.add_parser("clone", help="a new draft with a campaign's template and settings, and "
                                 "optionally its recipients by outcome")
    cloned.add_argument("id")
    cloned.add_argument("--name", help="the new campaign's name (default: the source's, with \" (copy)\")")
    cloned.add_argument("--recipients", choices=CLONE_PICKS, default="none",
                        help="which of its recipients the clone gets (default %(default)s): all, failed, "
                             "not_delivered (no delivery reported), not_read (no read reported)")
    cloned.set_defaults(run=cmd_clone)

    status = commands.add_parser("status", help="a campaign's status and counts")
    status.add_argument("id")
    status.add_argument("--watch", action="store_true", help="a live progress bar until it stops sending")
    status.add_argument("--interval", type=float, default=1.0, help="refresh period of --watch (seconds)")
    status.set_defaults(run=cmd_status)

    events = commands.add_parser("events", help="a campaign's history: every start, pause, resume, wait and "
                                 "completion, with who and why (oldest first)")
    events.add_argument("id")
    events.add_argument("--newest", action="store_true", help="the newest first")
    events.add_argument("--limit", type=int, default=100)
    events.add_argument("--next", help="the `next` token of the previous page")
    events.set_defaults(run=cmd_events)

    listing = commands.add_parser("list", help="campaigns, newest first")
    listing.add_argument("--status", choices=("draft", "scheduled", "sending", "paused", "completed", "cancelled"))
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--next", help="the `next` token of the previous page")
    listing.set_defaults(run=cmd_list)

    recipients = commands.add_parser("recipients", help="a campaign's recipients and their Graph error codes")
    recipients.add_argument("id")
    recipients.add_argument("--status", choices=("pending", "sending", "sent", "failed", "skipped", "in_doubt", "expired"))
    recipients.add_argument("--limit", type=int, default=100)
    recipients.add_argument("--next")
    recipients.set_defaults(run=cmd_recipients)

    exported = commands.add_parser("export", help="a campaign's recipients as one CSV file (phone, status, error "
                                   "code and message, sent/delivered/read times), every page of the export")
    exported.add_argument("id")
    exported.add_argument("--status", choices=("pending", "sending", "sent", "failed", "skipped", "in_doubt",
                                               "expired"))
    exported.add_argument("-o", "--output", metavar="FILE", help="write it here (default: standard output)")
    exported.add_argument("--limit", type=int, help="rows a page (default: the API's, 10 000)")
    exported.set_defaults(run=cmd_export)

    numbers = commands.add_parser("numbers", help="numbers: their limits, who has their throughput, the messaging "
                                  "limit left (one number with ID; --set to configure it)")
    numbers.add_argument("id", nargs="?", help="a phone number id (default: every number configured)")
    numbers.add_argument("--set", action="store_true", help="set the number's limits (PUT /numbers/ID)")
    numbers.add_argument("--throughput", type=int, default=80, help="with --set: msg/s Meta allows (default 80)")
    numbers.add_argument("--messaging-limit", type=int, help="with --set: unique users its portfolio may reach a day")
    numbers.add_argument("--portfolio", help="with --set: the portfolio whose messaging limit it shares")
    numbers.set_defaults(run=cmd_numbers)

    suppressed = commands.add_parser("suppressions", help="the suppression list: numbers never sent to again "
                                     "(opt-out replies, 131050, a person's)")
    actions = suppressed.add_subparsers(dest="action", required=True)
    listed = actions.add_parser("list", help="the suppressed numbers, newest first")
    listed.add_argument("--limit", type=int, default=100)
    listed.add_argument("--next", help="the `next` token of the previous page")
    actions.add_parser("show", help="one number of the list").add_argument("phone")
    add = actions.add_parser("add", help="suppress a number: its pending recipients in campaigns not finished "
                             "are skipped")
    add.add_argument("phone")
    add.add_argument("--reason", help="why (kept with it)")
    actions.add_parser("remove", help="take a number off the list (what it skipped stays skipped)").add_argument(
        "phone")
    suppressed.set_defaults(run=cmd_suppressions)
    return root


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    try:
        client = Client(args.api_url, region=args.region)
        return args.run(client, args, out)
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Unreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
