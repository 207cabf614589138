"""`make demo`: the incident, replayed against the local stack, end to end through the HTTP API.

The incident: a 678-recipient campaign's sending loop died with its web server after 15 messages and
nothing resumed it (15 sent, 663 pending, status `sending`, forever). Here:

1. the local stack starts (moto, the fake Graph API with ~50 ms latency posting signed status webhooks
   back to /webhook, the local Lambda runtime, the recovery schedule, the gateway on a free port);
2. the campaign is created THROUGH THE HTTP API: POST /campaigns, POST /campaigns/{id}/recipients as
   CSV (678 rows), POST /campaigns/{id}/send;
3. once the fake Graph API has accepted 15 messages, the sender process (found with
   GET /_local/invocations) is SIGKILLed: a real process death. The runtime reports it as Lambda does,
   with an on-failure record to the recovery function, which takes the shard over at once;
4. a progress bar on stderr shows the sending, the stall, the takeover and the finish;
5. stdout gets ONE JSON line:
   {"recipients", "sent", "failed", "in_doubt", "duplicates", "lost", "recovered_after_s"}

How the verdict is counted (at the provider, not from our own bookkeeping):
- sent / failed / in_doubt: the recipients' final statuses, read through GET /campaigns/{id}/recipients
  once the campaign is completed and the fake has posted all its status webhooks (a webhook proves an
  in-doubt send and resolves it as sent; a `failed` webhook marks a sent message failed);
- duplicates: recipients whose callback key (biz_opaque_callback_data) the fake Graph API received in
  more than one accepted send;
- lost: recipients whose callback key the fake never received in an accepted send AND whom the store does
  not mark failed, skipped or in_doubt. That is: still pending or sending (nothing resumed them), or
  marked sent although the provider never got them. A recipient in doubt is not lost: it is the honest
  gap (claimed by the killed batch, its POST may or may not have left), resolved under the default
  policy auto by the status webhooks (its own proves it sent; later sends' statuses without its own
  prove it never arrived, and it is sent once), and counted apart while it waits;
- recovered_after_s: from the SIGKILL to the first send the fake accepted from the batch that took over
  (accepted once that batch had started: the killed batch's last POSTs, on the wire at the kill, can
  still arrive after it).
The exit status is non-zero when anything was lost or duplicated, or the campaign did not complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import IO

RECIPIENTS = 678
KILL_AFTER = 15
RATE = 80
DEADLINE_SECONDS = 150.0
WEBHOOK_DRAIN_SECONDS = 60.0
TEMPLATE = {
    "name": "diwali_offer",
    "language": "en_US",
    "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"},
                                                    {"type": "text", "text": "{{2}}"}]}],
}


def recipients_csv(count: int) -> str:
    lines = ["phone,name,offer"]
    lines += [f"+91 98{n:08d},Customer {n},{10 + n % 40}%" for n in range(count)]
    return "\r\n".join(lines) + "\r\n"


class DemoFailed(Exception):
    """The demo could not run (the API refused a step, the campaign never completed)."""


# -- the progress display -----------------------------------------------------------------------------


class Progress:
    """A live bar on a terminal; one line per second (and per event) when stderr is a file or a pipe."""

    WIDTH = 32

    def __init__(self, stream: IO[str], total: int):
        self.stream = stream
        self.total = total
        self.tty = stream.isatty()
        self._last_line = ""
        self._last_print = 0.0

    def bar(self, counts: dict, note: str) -> None:
        done = {k: int(counts.get(k) or 0) for k in ("sent", "failed", "in_doubt", "skipped")}
        finished = sum(done.values())
        filled = int(self.WIDTH * finished / self.total) if self.total else 0
        line = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {finished:>4}/{self.total} done · "
                f"sent {done['sent']} · failed {done['failed']} · in doubt {done['in_doubt']} · "
                f"pending {int(counts.get('pending') or 0)}  {note}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()
        elif line != self._last_line and time.monotonic() - self._last_print >= 1.0:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = time.monotonic()
        self._last_line = line

    def event(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        if self.tty and self._last_line:
            self.stream.write(self._last_line)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


# -- talking to the API ---------------------------------------------------------------------------------


class Api:
    def __init__(self, base_url: str):
        import requests

        self.base_url = base_url
        self.session = requests.Session()

    def call(self, method: str, path: str, expect: int = 200, **kwargs) -> dict | list:
        import requests

        try:
            response = self.session.request(method, self.base_url + path, timeout=(2, 60), **kwargs)
        except requests.RequestException as error:
            raise DemoFailed(f"{method} {path}: {type(error).__name__}: {error}") from None
        if response.status_code != expect:
            raise DemoFailed(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def recipients(self, campaign_id: str, status: str | None = None) -> list[dict]:
        items, token = [], None
        while True:
            params = {"limit": 500, **({"next": token} if token else {}), **({"status": status} if status else {})}
            page = self.call("GET", f"/campaigns/{campaign_id}/recipients", params=params)
            items += page["items"]
            token = page.get("next")
            if not token:
                return items


def live_senders(api: Api) -> list[dict]:
    return [i for i in api.call("GET", "/_local/invocations") if i["function"] == "sender" and i["pid"]]


# -- the verdict -----------------------------------------------------------------------------------------


def verdict(recipients: list[dict], sends: list[dict]) -> dict:
    """Counted at the provider: see the module's doc for what lost and duplicates mean."""
    keys = {r["key"] for r in recipients}
    received = Counter(s["callback"] for s in sends if s.get("callback") in keys)
    statuses = Counter(r["status"] for r in recipients)
    return {
        "recipients": len(recipients),
        "sent": statuses.get("sent", 0),
        "failed": statuses.get("failed", 0),
        "in_doubt": statuses.get("in_doubt", 0),
        "duplicates": sum(1 for n in received.values() if n > 1),
        "lost": sum(1 for r in recipients
                    if not received.get(r["key"]) and r["status"] not in ("failed", "skipped", "in_doubt")),
    }


# -- the run ---------------------------------------------------------------------------------------------


class Killer(threading.Thread):
    """Finds the sender with GET /_local/invocations, watches the fake's counter closely and SIGKILLs the
    sender once `after` sends were accepted (a thread of its own, so the progress display cannot delay it)."""

    def __init__(self, api: Api, fake, after: int, deadline_s: float):
        super().__init__(name="demo-killer", daemon=True)
        self.api, self.fake, self.after, self.deadline = api, fake, after, time.monotonic() + deadline_s
        self.pid: int | None = None
        self.at: float | None = None  # wall clock of the kill, comparable with the fake's records
        self.seq = 0  # the fake's send count just before the kill
        self.stats: dict = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                senders = live_senders(self.api)
                if not senders:
                    time.sleep(0.02)  # polling for the process to appear
                    continue
                while self.fake.stats()["accepted"] < self.after and time.monotonic() < self.deadline:
                    time.sleep(0.002)  # polling the fake's counter
                stats = self.fake.stats()
                at = time.time()
                try:
                    os.kill(senders[0]["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    continue  # it ended meanwhile: look again
                self.pid, self.at, self.seq, self.stats = senders[0]["pid"], at, stats["accepted"], stats
                return
            self.error = "no sender to kill before the deadline"
        except Exception as error:  # reported by the main loop
            self.error = f"{type(error).__name__}: {error}"


def run(stack, progress_stream: IO[str], recipients: int = RECIPIENTS, kill_after: int = KILL_AFTER,
        rate: int = RATE, deadline_s: float = DEADLINE_SECONDS, evidence: dict | None = None) -> dict:
    """The replay on a started stack (with its gateway); returns the JSON line's fields. `evidence`, if
    given, gets the raw records the verdict comes from: the recipients as the API lists them, every send
    the fake accepted, the runtime's record of each invocation, the kill."""
    api = Api(stack.gateway.url)
    fake = stack.fake
    say = Progress(progress_stream, recipients)
    created = api.call("POST", "/campaigns", expect=201, json={
        "name": "Diwali offer (incident replay)", "phone_number_id": stack.config.phone_number_id,
        "template": TEMPLATE, "rate": rate})  # the default in-doubt policy: auto
    campaign_id = created["id"]
    imported = api.call("POST", f"/campaigns/{campaign_id}/recipients", data=recipients_csv(recipients).encode(),
                        headers={"Content-Type": "text/csv"})
    if imported["accepted"] != recipients:
        raise DemoFailed(f"the import accepted {imported['accepted']} of {recipients} rows: {imported}")
    say.event(f"campaign {campaign_id}: {recipients} recipients imported as CSV through POST "
              f"/campaigns/{campaign_id}/recipients; sending at {rate} msg/s "
              f"(dashboard: {stack.gateway.url}/_local/dashboard)")
    killer = Killer(api, fake, kill_after, deadline_s)
    api.call("POST", f"/campaigns/{campaign_id}/send")
    sent_at = time.monotonic()
    killer.start()

    reported_kill, recovered_after, takeover_pid, takeover_at = False, None, None, None
    counts, status = {}, "sending"
    while True:
        if time.monotonic() - sent_at > deadline_s:
            raise DemoFailed(f"the campaign did not complete within {deadline_s:.0f}s: {status} {counts}")
        if killer.error:
            raise DemoFailed(f"could not kill the sender: {killer.error}")
        if killer.pid and not reported_kill:
            reported_kill = True
            say.event(f"✗ SIGKILL sender pid {killer.pid} after {killer.stats['accepted']} sends accepted by the "
                      f"Graph API ({killer.stats['in_flight']} in flight): the incident's crash")
        if killer.pid and takeover_pid is None:
            others = [s for s in live_senders(api) if s["pid"] != killer.pid]
            if others:
                takeover_pid, takeover_at = others[0]["pid"], others[0]["started_at"]
                say.event(f"↻ takeover: recovery acted on Lambda's on-failure record and started sender pid "
                          f"{takeover_pid} {time.time() - killer.at:.2f}s after the kill")
        if takeover_at is not None and recovered_after is None:
            # The takeover's first send: the killed batch's own last POSTs, on the wire at the kill, may
            # arrive after it, but not after the takeover batch started.
            after = [s for s in fake.sends(since=killer.seq) if s["at"] >= takeover_at]
            if after:
                recovered_after = round(min(s["at"] for s in after) - killer.at, 3)
        answer = api.call("GET", f"/campaigns/{campaign_id}")
        counts, status = answer["counts"], answer["status"]
        if not killer.pid:
            note = f"achieved {answer['current_rate']:.0f} msg/s"
        elif recovered_after is None:
            note = f"STALLED {time.time() - killer.at:.1f}s (sender dead; waiting for recovery)"
        else:
            note = f"recovered {recovered_after:.2f}s after the kill · achieved {answer['current_rate']:.0f} msg/s"
        say.bar(counts, note)
        if status != "sending" and killer.pid:
            break
        time.sleep(0.25)  # the display's refresh period
    if status != "completed":
        raise DemoFailed(f"the campaign ended {status}: {counts}")
    say.event(f"✓ completed {time.monotonic() - sent_at:.1f}s after POST send")
    proven = wait_for_proofs(api, fake, campaign_id)
    final = api.call("GET", f"/campaigns/{campaign_id}")
    say.bar(final["counts"], "finished")
    say.close()
    listed = api.recipients(campaign_id)
    result = verdict(listed, fake.sends())
    result["recovered_after_s"] = recovered_after
    if evidence is not None:
        evidence.update(recipients=listed, sends=fake.sends(), invocations=stack.runtime.history(),
                        kill={"pid": killer.pid, "at": killer.at})
    became = Counter(r["in_doubt"] for r in listed if r.get("in_doubt"))
    say.event(f"in doubt after the kill: {sum(became.values())} (claimed by the killed batch): "
              f"{became['proven_sent']} proven sent by their status webhooks, {became['resent_after_absence']} "
              f"proven never to have reached the Graph API (later sends' statuses came, theirs did not) and sent "
              f"once, {became['waiting_for_proof']} still waiting for proof, {became['sent_twice']} sent twice"
              f"{'' if proven else ' (some webhooks still pending)'}")
    stats = fake.stats()
    say.event(f"Graph API: {stats['accepted']} sends accepted, {stats['duplicates']} duplicate sends, "
              f"{stats['webhooks_posted']} status webhooks posted so far")
    return result


def wait_for_proofs(api: Api, fake, campaign_id: str) -> bool:
    """Until every in-doubt recipient whose send reached the fake has been proven sent by its webhook
    (the ones still in doubt are then exactly those the provider never got); False at the deadline."""
    deadline = time.monotonic() + WEBHOOK_DRAIN_SECONDS
    while time.monotonic() < deadline:
        in_doubt = api.recipients(campaign_id, status="in_doubt")
        received = {s["callback"] for s in fake.sends()}
        if not any(r["key"] in received for r in in_doubt):
            return True
        time.sleep(0.2)  # the webhooks are on their way: polling the store
    return False


@contextlib.contextmanager
def stdout_for_result() -> Iterator[IO[str]]:
    """Stdout keeps only the result line: everything else written to fd 1 (library output, EMF metrics,
    logs) goes to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    result = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        yield result
    finally:
        result.flush()
        sys.stdout = real_stdout
        os.dup2(saved, 1)
        os.close(saved)
        result.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=RECIPIENTS)
    parser.add_argument("--kill-after", type=int, default=KILL_AFTER, help="accepted sends before the SIGKILL")
    parser.add_argument("--rate", type=int, default=RATE, help="messages per second of the campaign")
    parser.add_argument("--evidence", metavar="FILE",
                        help="write the raw records behind the verdict there as JSON (sends, recipients, invocations)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    started = time.monotonic()
    with stdout_for_result() as out:
        from local.gateway import GatewayError
        from local.stack import LocalStack, StackConfig

        overrides = {} if os.environ.get("API_PORT") else {"api_port": 0}
        overrides["local_data_dir"] = ""  # its own store, in memory: it runs beside `make up`
        if not os.environ.get("FAKE_WEBHOOK_FAILED_RATIO"):
            overrides["fake_webhook_failed_ratio"] = 0.0  # the replay is about crashes, not undeliverable numbers
        try:
            config = StackConfig.from_env(**overrides)
        except (TypeError, ValueError) as error:
            print(f"demo: bad setting in the environment: {error}", file=sys.stderr)
            return 2
        if config.graph_api_url:
            print("demo: the demo counts at the fake Graph API: unset GRAPH_API_URL", file=sys.stderr)
            return 2
        log_path = os.path.join(tempfile.mkdtemp(prefix="campaigns-demo-"), "functions.log")
        stack = LocalStack(config, log_path=log_path)
        try:
            stack.start()
            stack.start_gateway()
            print(f"local stack up in {time.monotonic() - started:.1f}s: API {stack.gateway.url}, fake Graph API "
                  f"{stack.fake.url}, functions' logs {log_path}", file=sys.stderr, flush=True)
        except (GatewayError, RuntimeError, OSError) as error:
            stack.stop()
            print(f"demo: the local stack did not start: {error}", file=sys.stderr)
            return 2
        evidence: dict = {}
        try:
            result = run(stack, sys.stderr, args.recipients, args.kill_after, args.rate, evidence=evidence)
            if args.evidence:
                with open(args.evidence, "w") as file:
                    json.dump(evidence, file)
        except DemoFailed as error:
            print(f"demo: FAILED: {error}", file=sys.stderr)
            return 1
        finally:
            stack.stop()
        out.write(json.dumps(result) + "\n")
    print(f"demo finished in {time.monotonic() - started:.1f}s", file=sys.stderr)
    bad = result["lost"] or result["duplicates"] or result["recovered_after_s"] is None
    if bad:
        print(f"demo: FAILED: {result['lost']} lost, {result['duplicates']} duplicated", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
