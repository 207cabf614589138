"""The local dashboard: every campaign at a glance (status, progress, achieved rate, ETA, what it waits
for), and per campaign progress and messages per second over time, counts by status, its failures
grouped by Graph error code with what each code means (campaigns.graph_errors, the error table), the
recipients in doubt, stuck shards and recent errors, plus the live Lambda invocations of the local runtime.

The gateway serves it: `GET /_local/dashboard` (local/static/dashboard.html: small vanilla JS drawing
inline SVG, no CDN, no network beyond this gateway) and `GET /_local/metrics`, the JSON feed the page
polls every second. A sampler thread builds the time series: once per `interval` it reads the campaigns
through the very API handler the HTTP routes use (in-process, the same proxy events), so what the
dashboard shows is what the API answers. Recent errors come from the API (paused reason, last error,
the latest failed recipients with their Graph error codes) and from the runtime (invocations that were
killed, timed out or raised). Each campaign's history (`GET /campaigns/{id}/events`, the latest first:
every start, pause, resume, wait and completion, with who and why) is read with its status.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path

from campaigns import graph_errors
from campaigns.observability import mask_phone
from campaigns.states import SETTLED_COUNTERS, STATUS_COUNTS

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
ACTIVE = ("sending", "paused", "scheduled")
# Re-read a campaign that is not active at most this often (imports into drafts show up).
IDLE_REFRESH_SECONDS = 15.0
LISTED_CAMPAIGNS = 100  # a page of GET /campaigns
MAX_CAMPAIGNS = 500  # the overview lists this many, newest first
CARDS_SHOWN = 20  # the newest campaigns get a card of their own
RECENT_ERRORS = 8
FAILURES_READ = 1000  # failed recipients read to group by error code (the count says when there were more)
IN_DOUBT_SHOWN = 20
HISTORY_SHOWN = 10  # the latest events of a campaign's history


def shown_phone(phone: str | None) -> str | None:
    """A recipient's number as the dashboard shows it: masked as in the logs, in E.164's + form."""
    masked = mask_phone(phone)
    return f"+{masked}" if masked else masked


class _Track:
    """What the sampler knows about one campaign."""

    def __init__(self, history: int):
        self.status: dict = {}
        self.samples: deque[tuple[float, int, float]] = deque(maxlen=history)  # (t, done, progress)
        self.errors: list[dict] = []
        self.failures: dict = {"groups": [], "read": 0}  # failed recipients by error code
        self.in_doubt: list[dict] = []  # the recipients in doubt (the first IN_DOUBT_SHOWN)
        self.history: list[dict] = []  # its latest events, the newest first
        self.fetched_at = 0.0
        self.failed_seen = 0
        self.in_doubt_seen = 0


class Dashboard:
    def __init__(self, gateway, interval: float = 1.0, history: int = 900):
        self.gateway = gateway
        self.interval = interval
        self._history = history
        self._tracks: dict[str, _Track] = {}
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples_taken = 0
        self.last_error: str | None = None
        self._numbers_seen: list[dict] = []  # the numbers' budgets, from the last sample

    # -- life cycle

    def start(self) -> Dashboard:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                self.sample()
                self.last_error = None
            except Exception as error:  # the dashboard must never take the gateway down
                self.last_error = f"{type(error).__name__}: {error}"
                log.debug("dashboard sample failed", exc_info=True)
            self._stopped.wait(max(0.05, self.interval - (time.monotonic() - started)))

    # -- sampling

    def sample(self) -> None:
        """Read the campaign list and every campaign worth re-reading, through the API handler."""
        now = time.time()
        order = []
        for item in self._campaign_list():
            campaign_id = item["id"]
            order.append(campaign_id)
            track = self._tracks.get(campaign_id)
            if track is None:
                track = self._tracks[campaign_id] = _Track(self._history)
            due = (
                not track.status
                or item.get("status") in ACTIVE
                or item.get("status") != track.status.get("status")
                or now - track.fetched_at > IDLE_REFRESH_SECONDS
            )
            if due:
                self._fetch(campaign_id, track, now)
        numbers = self._numbers()
        with self._lock:
            self._order = order
            self._numbers_seen = numbers
            for stale in set(self._tracks) - set(order):
                del self._tracks[stale]
        self.samples_taken += 1

    def _campaign_list(self) -> list[dict]:
        """Every campaign, newest first (up to MAX_CAMPAIGNS), page by page of GET /campaigns."""
        items, token = [], None
        while len(items) < MAX_CAMPAIGNS:
            query = {"limit": str(LISTED_CAMPAIGNS), **({"next": token} if token else {})}
            status, page = self.gateway.call_api("GET", "/campaigns", query)
            if status != 200 or not isinstance(page, dict):
                raise RuntimeError(f"GET /campaigns answered {status}")
            items += page.get("items") or []
            token = page.get("next")
            if not token:
                break
        return items[:MAX_CAMPAIGNS]

    def _numbers(self) -> list[dict]:
        """The numbers configured, and those the campaigns sending now send from: each one's budget and
        who has it (GET /numbers, GET /numbers/{id})."""
        status, page = self.gateway.call_api("GET", "/numbers")
        found = {n["phone_number_id"]: n for n in (page.get("items") or [])} if status == 200 else {}
        for track in self._tracks.values():
            number = (track.status or {}).get("phone_number_id")
            if (track.status or {}).get("status") == "sending" and number and number not in found:
                status, view = self.gateway.call_api("GET", f"/numbers/{number}")
                if status == 200:
                    found[number] = view
        return [found[n] for n in sorted(found)]

    def _fetch(self, campaign_id: str, track: _Track, now: float) -> None:
        status, campaign = self.gateway.call_api("GET", f"/campaigns/{campaign_id}")
        if status != 200 or not isinstance(campaign, dict):
            return
        counts = campaign.get("counts") or {}
        done = sum(int(counts.get(k) or 0) for k in SETTLED_COUNTERS)
        errors, failures, in_doubt = track.errors, track.failures, track.in_doubt
        failed, doubtful = int(counts.get("failed") or 0), int(counts.get("in_doubt") or 0)
        if failed != track.failed_seen:
            recipients = self._recipients(campaign_id, "failed", FAILURES_READ)
            errors, failures = recent_failures(recipients), failures_by_code(recipients)
        if doubtful != track.in_doubt_seen:
            in_doubt = [{"phone": shown_phone(r.get("phone")), "since": r.get("in_doubt_at"),
                         "state": r.get("in_doubt")} for r in self._recipients(campaign_id, "in_doubt", IN_DOUBT_SHOWN)]
        history = self._events(campaign_id)
        with self._lock:
            track.status = campaign
            track.fetched_at = now
            track.failed_seen, track.in_doubt_seen = failed, doubtful
            track.errors, track.failures, track.in_doubt = errors, failures, in_doubt
            track.history = history if history is not None else track.history
            if campaign.get("status") != "draft":
                track.samples.append((now, done, float(campaign.get("progress") or 0.0)))

    def _events(self, campaign_id: str) -> list[dict] | None:
        """The campaign's latest events, the newest first (None if the API did not answer them)."""
        status, page = self.gateway.call_api("GET", f"/campaigns/{campaign_id}/events",
                                             {"order": "newest", "limit": str(HISTORY_SHOWN)})
        if status != 200 or not isinstance(page, dict) or not isinstance(page.get("items"), list):
            return None
        return [{k: e.get(k) for k in ("at", "kind", "by", "cause", "until", "code")} for e in page["items"]]

    def _recipients(self, campaign_id: str, status_name: str, most: int) -> list[dict]:
        """Up to `most` of the campaign's recipients in that status, page by page."""
        items, token = [], None
        while len(items) < most:
            query = {"status": status_name, "limit": str(min(500, most - len(items))), **({"next": token} if token else {})}
            status, page = self.gateway.call_api("GET", f"/campaigns/{campaign_id}/recipients", query)
            if status != 200 or not isinstance(page, dict):
                break
            items += page.get("items") or []
            token = page.get("next")
            if not token:
                break
        return items

    # -- the feed

    def metrics(self) -> dict:
        with self._lock:
            known = [campaign_id for campaign_id in self._order
                     if campaign_id in self._tracks and self._tracks[campaign_id].status]
            overview = [self._overview(self._tracks[campaign_id]) for campaign_id in known]
            campaigns = [self._campaign_view(campaign_id, self._tracks[campaign_id]) for campaign_id in known[:CARDS_SHOWN]]
        runtime = self.gateway.runtime
        invocations, failures = [], []
        if runtime is not None:
            invocations = [{k: v for k, v in i.items() if k != "event"} for i in runtime.invocations()]
            history = runtime.history()
            for entry in reversed(history[-2000:]):
                if entry.get("outcome") not in (None, "ok"):
                    failures.append({
                        "at": entry.get("ended_at"),
                        "function": entry.get("function"),
                        "pid": entry.get("pid"),
                        "outcome": entry.get("outcome"),
                        "message": (entry.get("error") or {}).get("errorMessage"),
                    })
                    if len(failures) >= RECENT_ERRORS:
                        break
        return {
            "now": time.time(),
            "interval": self.interval,
            "samples_taken": self.samples_taken,
            "sampler_error": self.last_error,
            "overview": overview,
            "campaigns": campaigns,
            "numbers": list(self._numbers_seen),
            "invocations": invocations,
            "recent_failures": failures,
        }

    @staticmethod
    def _overview(track: _Track) -> dict:
        """One line of the overview of every campaign."""
        status = track.status
        return {name: status.get(name) for name in ("id", "name", "status", "progress", "total", "current_rate",
                                                     "eta_seconds", "waiting_reason", "waiting_until", "paused_by",
                                                     "paused_reason")}

    @staticmethod
    def _campaign_view(campaign_id: str, track: _Track) -> dict:
        status = track.status
        samples = list(track.samples)
        t0 = samples[0][0] if samples else time.time()
        series_t = [round(t - t0, 2) for t, _, _ in samples]
        progress = [round(p * 100, 2) for _, _, p in samples]
        mps = [0.0] + [
            round(max(0, d1 - d0) / (t1 - t0_), 2) if t1 > t0_ else 0.0
            for (t0_, d0, _), (t1, d1, _) in zip(samples, samples[1:], strict=False)
        ]
        errors = []
        if status.get("paused_reason"):
            errors.append({"at": None, "message": f"paused: {status['paused_reason']}"})
        if status.get("last_error"):
            errors.append({"at": None, "message": f"last error: {status['last_error']}"})
        for failure in track.errors:
            errors.append({"at": failure["at"], "message": f"{failure['phone']} failed with {failure['code']} "
                                                            f"({failure['class']}): {failure['message'] or ''}"})
        return {
            "id": campaign_id,
            "name": status.get("name"),
            "status": status.get("status"),
            "rate": status.get("rate"),
            "total": status.get("total"),
            "counts": {k: int((status.get("counts") or {}).get(k) or 0) for k in STATUS_COUNTS},
            "in_doubt_resolution": status.get("in_doubt_resolution") or {},
            "progress": status.get("progress"),
            "current_rate": status.get("current_rate"),  # achieved: what the provider accepted lately
            "pace": status.get("pace"),  # what the rate limiters allow
            "eta_seconds": status.get("eta_seconds"),
            "waiting_reason": status.get("waiting_reason"),
            "waiting_until": status.get("waiting_until"),
            "paused_by": status.get("paused_by"),
            "stuck_shards": status.get("stuck_shards") or [],
            "shards": status.get("shards"),
            "started_at": status.get("started_at"),
            "completed_at": status.get("completed_at"),
            "series": {"t": series_t, "progress": progress, "mps": mps},
            "errors": errors[:RECENT_ERRORS],
            "failures": {**track.failures, "failed": int((status.get("counts") or {}).get("failed") or 0)},
            "in_doubt": list(track.in_doubt),
            "history": list(track.history),
        }

    def page(self) -> str:
        html = (STATIC / "dashboard.html").read_text(encoding="utf-8")
        initial = json.dumps(self.metrics(), default=str).replace("</", "<\\/")
        return html.replace("/*INITIAL_METRICS*/null", initial)



def recent_failures(recipients: list[dict]) -> list[dict]:
    """The latest failed recipients, the newest first (ISO 8601 UTC strings of one form sort by time)."""
    items = sorted(recipients, key=lambda r: r.get("failed_at") or "", reverse=True)
    return [{"at": r.get("failed_at"), "phone": shown_phone(r.get("phone")), "code": r.get("error_code"),
             "class": r.get("error_class"), "message": r.get("error_message")} for r in items[:RECENT_ERRORS]]


def failures_by_code(recipients: list[dict]) -> dict:
    """Failed recipients grouped by Graph error code, the most frequent first, each with its class and
    what the code means (the error table), and one of its messages as Graph wrote it."""
    groups: dict[object, dict] = {}
    for r in recipients:
        code = r.get("error_code")
        group = groups.setdefault(code, {"code": code, "count": 0, "class": r.get("error_class"),
                                         "meaning": graph_errors.meaning(code) if code is not None else "no code",
                                         "example": r.get("error_message")})
        group["count"] += 1
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], str(g["code"])))
    return {"groups": ordered, "read": len(recipients)}
