"""The local dashboard, rendered by headless Chromium while a campaign runs: the DOM its JavaScript
builds must show that campaign's numbers (from the gateway's JSON feed, itself read through the API).

Chromium is Debian's package (`make chromium`, which `make test` runs, installs it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from campaigns import graph_errors
from campaigns.ratelimit import TRANSIT_SPREAD_SECONDS
from local.dashboard import Dashboard, shown_phone
from tests.helpers import wait_until

CHROMIUM = Path("/usr/bin/chromium")
TEMPLATE = {"name": "diwali_offer", "language": "en_US",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}]}]}


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=2500", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def render(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran (virtual time: the first poll of the feed included)."""
    return _chromium(tmp_path, "--dump-dom", url).stdout


# Where the test keeps its screenshot of the dashboard (gitignored; DASHBOARD_SCREENSHOT overrides it).
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT", Path(__file__).resolve().parent.parent
                                 / ".screenshots" / "dashboard.png"))


def screenshot(url: str, tmp_path: Path, path: Path = SCREENSHOT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,1800", f"--screenshot={path}", url)
    assert path.stat().st_size > 0
    return path


FIGURES = ("achieved", "pace", "eta")  # the summary's live figures, each a span of that class


class Campaigns(HTMLParser):
    """Each campaign section's data attributes, its count cells, its figures and its error lines."""

    def __init__(self):
        super().__init__()
        self.found: dict[str, dict] = {}
        self.plots: list[dict] = []
        self.body: dict = {}
        self._current: dict | None = None
        self._cell: str | None = None
        self._figure: str | None = None
        self._error: list[str] | None = None
        self.overview: dict[str, str] = {}  # campaign id -> its status, from the overview's rows
        self.meanings: list[str] = []  # the failure groups' "what it means" cells
        self._meaning = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if tag == "section" and "data-campaign-id" in attrs:
            self._current = self.found[attrs["data-campaign-id"]] = {**attrs, "counts": {}, "figures": {},
                                                                      "errors": [], "history": [], "failures": {},
                                                                      "in_doubt": []}
        if tag == "tr" and "data-campaign-row" in attrs:
            self.overview[attrs["data-campaign-row"]] = attrs["data-row-status"]
        if self._current is not None and tag == "tr" and "data-failure-code" in attrs:
            self._current["failures"][attrs["data-failure-code"]] = int(attrs["data-failure-count"])
        if self._current is not None and tag == "td" and attrs.get("class") == "meaning":
            self._meaning = True
        if self._current is not None and tag == "div" and "data-event-kind" in attrs:
            self._current["history"].append((attrs["data-event-kind"], attrs["data-event-by"]))
        if self._current is not None and tag == "td" and "data-count" in attrs:
            self._cell = attrs["data-count"]
        if self._current is not None and tag == "span" and attrs.get("class") in FIGURES:
            self._figure = attrs["class"]
        if self._current is not None and tag == "li" and "data-in-doubt-phone" in attrs:
            self._current["in_doubt"].append(attrs["data-in-doubt-phone"])
        elif self._current is not None and tag == "li":
            self._error = []
            self._current["errors"].append(self._error)
        if tag == "svg" and "data-plot" in attrs:
            self.plots.append(attrs)

    def handle_data(self, data):
        if self._meaning:
            self.meanings.append(data)
            self._meaning = False
        if self._cell and self._current is not None:
            self._current["counts"][self._cell] = int(data)
            self._cell = None
        if self._figure and self._current is not None:
            self._current["figures"][self._figure] = data
            self._figure = None
        if self._error is not None:
            self._error.append(data)

    def handle_endtag(self, tag):
        if tag == "li":
            self._error = None


@pytest.fixture
def stack(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=50, fake_webhook_failed_ratio=0.0)
    stack.start_gateway(dashboard_interval=0.5)
    return stack


def test_the_dashboard_shows_a_running_campaign(stack, tmp_path):
    if not CHROMIUM.exists():
        # CI installs it (make test runs `make chromium`): there a missing browser is a failure.
        missing = pytest.fail if os.environ.get("CI") else pytest.skip
        missing("headless Chromium is not installed: run `make chromium` (make test does)")
    url = stack.gateway.url
    created = requests.post(f"{url}/campaigns", timeout=30, json={
        "name": "Dashboard <b>check</b>", "phone_number_id": "1234567890", "template": TEMPLATE, "rate": 20,
        "recipients": [{"phone": f"+9198{n:08d}", "variables": [f"n{n}"]} for n in range(300)]})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    assert requests.post(f"{url}/campaigns/{campaign_id}/send", timeout=30).status_code == 200

    def fed():
        feed = requests.get(f"{url}/_local/metrics", timeout=30).json()
        found = next((c for c in feed["campaigns"] if c["id"] == campaign_id and c["counts"]["sent"] >= 20), None)
        return found and {**found, "numbers_feed": feed["numbers"]}

    before = wait_until(fed, 60, "the feed to show some sends")
    assert len(before["series"]["t"]) >= 2 and before["status"] == "sending"
    dom = render(f"{url}/_local/dashboard", tmp_path)
    after = requests.get(f"{url}/campaigns/{campaign_id}", timeout=30).json()

    page = Campaigns()
    page.feed(dom)
    assert page.body.get("data-rendered") == "yes", dom[:2000]  # the script ran
    shown = page.found[campaign_id]
    assert int(shown["data-total"]) == 300
    # The numbers are the campaign's own, sampled between the feed read before and the API read after.
    assert before["counts"]["sent"] <= shown["counts"]["sent"] <= after["counts"]["sent"]
    assert int(shown["data-sent"]) == shown["counts"]["sent"]
    assert sum(shown["counts"][k] for k in ("pending", "sent", "failed", "in_doubt", "skipped")) == 300
    assert shown["data-status"] in ("sending", "completed")
    # Both plots are drawn, with the series' points; the name is shown as text, not markup.
    assert {p["data-plot"] for p in page.plots} >= {"progress", "messages/s"}
    assert all(int(p["data-points"]) >= 2 for p in page.plots)
    assert "Dashboard &lt;b&gt;check&lt;/b&gt;" in dom
    # The live figures by their names: what is achieved, and the pace apart (rate 20: 19.61 a second).
    assert re.fullmatch(r"achieved [\d.]+ msg/s", shown["figures"]["achieved"])
    assert shown["figures"]["pace"] in (f"pace {round(20 / (1 + TRANSIT_SPREAD_SECONDS), 2):g} msg/s", "pace 0 msg/s")  # 0 once it has finished
    assert re.search(r"sender pid \d+ · running", dom), "the live sender is listed"
    # The number it sends from, with its budget and who has it (the feed read while it sent).
    number = next(n for n in before["numbers_feed"] if n["phone_number_id"] == "1234567890")
    assert [(s["campaign_id"], s["share_mps"]) for s in number["sending"]] == [(campaign_id, 20.0)]
    assert 'data-number="1234567890"' in dom
    # Its history, the latest first: the person's send at the bottom (and its completion above, if done).
    assert shown["history"][-1] == ("started", "person"), shown["history"]


class _Answers:
    """Stands in for the gateway: the dashboard reads these API answers (the unit here is the page)."""

    runtime = None

    def __init__(self, campaign: dict, failed: list[dict], events: list[dict] | None = None,
                 in_doubt: list[dict] | None = None):
        self.campaign, self.failed, self.events, self.in_doubt = campaign, failed, events or [], in_doubt or []

    def call_api(self, method, path, query=None, body=None):
        if path == "/campaigns":
            return 200, {"items": [{"id": self.campaign["id"], "status": self.campaign["status"]}], "next": None}
        if path.endswith("/recipients"):
            return 200, {"items": self.failed if query["status"] == "failed" else self.in_doubt, "next": None}
        if path.endswith("/events"):
            assert query == {"order": "newest", "limit": "10"}
            return 200, {"items": self.events, "next": None}
        return 200, self.campaign


def test_the_page_names_the_achieved_rate_the_pace_and_the_eta_and_reads_iso_moments(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed: run `make chromium` (make test does)")
    campaign = {"id": "c0ffee", "name": "figures", "status": "sending", "rate": 80, "shards": 1, "total": 500,
                "counts": {"pending": 399, "sent": 98, "failed": 2, "in_doubt": 1}, "progress": 0.2, "current_rate": 38.4,
                "pace": 79.2, "eta_seconds": 10, "stuck_shards": [], "paused_reason": None, "last_error": None,
                "started_at": "2026-11-28T18:54:20.970+00:00", "completed_at": None}
    failed = [{"failed_at": at, "phone": "919876543210", "error_code": 131026, "error_class": "recipient",
               "error_message": "undeliverable"} for at in ("2026-11-28T18:54:21.000+00:00",
                                                            "2026-11-28T18:54:29.000+00:00")]
    events = [  # as the API answers them with order=newest
        {"at": "2026-11-28T18:55:00.000+00:00", "kind": "waiting", "by": "system", "cause": "send_window",
         "until": "2026-11-29T03:30:00.000+00:00", "code": None},
        {"at": "2026-11-28T18:54:40.000+00:00", "kind": "resumed", "by": "provider",
         "cause": "template diwali_offer (en_US) APPROVED UNPAUSE by Meta", "until": None, "code": None},
        {"at": "2026-11-28T18:54:30.000+00:00", "kind": "paused", "by": "provider",
         "cause": "template diwali_offer (en_US) PAUSED by Meta: LOW_QUALITY", "until": None, "code": None},
        {"at": "2026-11-28T18:54:20.970+00:00", "kind": "started", "by": "person", "cause": "send requested",
         "until": None, "code": None}]
    in_doubt = [{"phone": "919876543211", "in_doubt_at": "2026-11-28T18:54:25.000+00:00",
                 "in_doubt": "waiting_for_proof"}]
    dashboard = Dashboard(_Answers(campaign, failed, events, in_doubt))
    dashboard.sample()
    page_file = tmp_path / "dashboard.html"
    page_file.write_text(dashboard.page(), encoding="utf-8")
    page = Campaigns()
    dom = render(page_file.as_uri(), tmp_path)  # its first render, from the metrics in the page
    page.feed(dom)
    shown = page.found["c0ffee"]
    assert shown["figures"] == {"achieved": "achieved 38.4 msg/s", "pace": "pace 79.2 msg/s", "eta": "ETA 10 s"}
    # The failed recipients' ISO moments are shown as times of day, the latest first.
    times = [parts[0] for parts in shown["errors"]]
    assert len(times) == 2 and all(re.fullmatch(r"\d{1,2}:\d\d:\d\d( [AP]M)?", t) for t in times), times
    assert times[0] != times[1] and "29" in times[0].split(":")[2]
    # The history, the latest first, each event with who and why.
    assert shown["history"] == [("waiting", "system"), ("resumed", "provider"), ("paused", "provider"),
                                ("started", "person")]
    assert "PAUSED by Meta: LOW_QUALITY" in dom and "send_window (until " in dom
    # Failures grouped by code, with what the code means from the error table; the recipient in doubt.
    assert shown["failures"] == {"131026": 2} and page.meanings == [graph_errors.meaning(131026)]
    assert shown["in_doubt"] == [shown_phone("919876543211")]
    assert page.overview == {"c0ffee": "sending"}


def test_the_dashboard_shows_every_campaign_and_a_running_ones_failures_by_code(stack, tmp_path):
    """Two campaigns: one running into Graph errors for some of its recipients, one waiting for its send
    window. The overview lists both with what they wait for; the running one's card groups its failures
    by code with what each means. The test keeps a screenshot (SCREENSHOT)."""
    if not CHROMIUM.exists():
        missing = pytest.fail if os.environ.get("CI") else pytest.skip
        missing("headless Chromium is not installed: run `make chromium` (make test does)")
    url = stack.gateway.url
    phones = [f"9198{n:08d}" for n in range(200)]
    stack.fake.configure(reject_numbers={**{phones[n]: 131026 for n in (3, 40, 77, 120)},
                                         **{phones[n]: 132005 for n in (9, 150)}, phones[60]: 131049})
    running = requests.post(f"{url}/campaigns", timeout=30, json={
        "name": "Diwali offer", "phone_number_id": "1234567890", "template": TEMPLATE, "rate": 10,
        "recipients": [{"phone": f"+{p}", "variables": [f"n{n}"]} for n, p in enumerate(phones)]}).json()
    closed = datetime.now(UTC) + timedelta(hours=3)
    waiting = requests.post(f"{url}/campaigns", timeout=30, json={
        "name": "Weekend reminder", "phone_number_id": "1234567890", "template": TEMPLATE, "rate": 10,
        "send_window": {"start": closed.strftime("%H:%M"), "end": (closed + timedelta(hours=1)).strftime("%H:%M"),
                        "timezone": "UTC"},
        "recipients": [{"phone": f"+9199{n:08d}", "variables": [f"n{n}"]} for n in range(50)]}).json()
    for campaign in (running, waiting):
        assert requests.post(f"{url}/campaigns/{campaign['id']}/send", timeout=30).status_code == 200

    def failures_fed():
        feed = requests.get(f"{url}/_local/metrics", timeout=30).json()
        shown = {c["id"]: c for c in feed["campaigns"]}
        ready = (shown.get(running["id"], {}).get("counts", {}).get("failed", 0) >= 3
                 and shown.get(waiting["id"], {}).get("waiting_reason") == "send_window")
        return ready and feed

    wait_until(failures_fed, 90, "failures of the running campaign and the other's wait in the feed")
    dom = render(f"{url}/_local/dashboard", tmp_path)
    kept = screenshot(f"{url}/_local/dashboard", tmp_path)
    page = Campaigns()
    page.feed(dom)
    assert page.overview[running["id"]] in ("sending", "completed") and page.overview[waiting["id"]] == "sending"
    assert "send_window until" in dom
    shown = page.found[running["id"]]
    failed = requests.get(f"{url}/campaigns/{running['id']}/recipients", params={"status": "failed"},
                          timeout=30).json()["items"]
    # Every group the card shows is one of the codes the fake answered, counted no higher than the store has.
    expected = Counter(str(r["error_code"]) for r in failed)
    assert shown["failures"] and all(0 < count <= expected[code] for code, count in shown["failures"].items())
    assert set(page.meanings) <= {graph_errors.meaning(int(code)) for code in shown["failures"]}
    assert kept.exists()


def test_the_feed_reports_stuck_shards_and_recent_failures(stack):
    """A SIGKILLed sender shows up among the runtime's recent failures; the feed has the series."""
    url = stack.gateway.url
    created = requests.post(f"{url}/campaigns", timeout=30, json={
        "name": "feed", "phone_number_id": "1234567890", "template": TEMPLATE, "rate": 20,
        "recipients": [{"phone": f"+9198{n:08d}", "variables": [f"n{n}"]} for n in range(100)]})
    campaign_id = created.json()["id"]
    requests.post(f"{url}/campaigns/{campaign_id}/send", timeout=30)
    senders = wait_until(lambda: [i for i in requests.get(f"{url}/_local/invocations", timeout=30).json()
                                  if i["function"] == "sender"], 30, "a sender")
    os.kill(senders[0]["pid"], signal.SIGKILL)
    def both():
        feed = requests.get(f"{url}/_local/metrics", timeout=30).json()
        listed = any(c["id"] == campaign_id for c in feed["campaigns"])
        return feed if feed["recent_failures"] and listed else None

    feed = wait_until(both, 30, "the kill and the campaign in the feed")
    failure = feed["recent_failures"][0]
    assert failure["function"] == "sender" and failure["pid"] == senders[0]["pid"]
    assert failure["outcome"] == "killed" and "signal: killed" in failure["message"]
    campaign = next(c for c in feed["campaigns"] if c["id"] == campaign_id)
    assert set(campaign) >= {"counts", "series", "stuck_shards", "errors", "progress", "current_rate", "pace",
                             "eta_seconds"}
    assert isinstance(campaign["stuck_shards"], list)
