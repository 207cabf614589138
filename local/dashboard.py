"""The local dashboard: per campaign, progress and messages per second over time, counts by status,
stuck shards and recent errors, plus the live Lambda invocations of the local runtime.

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

from campaigns.observability import mask_phone
from campaigns.states import SETTLED_COUNTERS, STATUS_COUNTS

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
ACTIVE = ("sending", "paused", "scheduled")
# Re-read a campaign that is not active at most this often (imports into drafts show up).
IDLE_REFRESH_SECONDS = 15.0
LISTED_CAMPAIGNS = 20
RECENT_ERRORS = 8
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
        self.history: list[dict] = []  # its latest events, the newest first
        self.fetched_at = 0.0
        self.failed_seen = 0


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
        status, page = self.gateway.call_api("GET", "/campaigns", {"limit": str(LISTED_CAMPAIGNS)})
        if status != 200 or not isinstance(page, dict):
            raise RuntimeError(f"GET /campaigns answered {status}")
        now = time.time()
        order = []
        for item in page.get("items") or []:
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
        errors = track.errors
        failed = int(counts.get("failed") or 0)
        if failed != track.failed_seen:
            errors = self._failed_recipients(campaign_id) or errors
        history = self._events(campaign_id)
        with self._lock:
            track.status = campaign
            track.fetched_at = now
            track.failed_seen = failed
            track.errors = errors
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

    def _failed_recipients(self, campaign_id: str) -> list[dict]:
        status, page = self.gateway.call_api("GET", f"/campaigns/{campaign_id}/recipients",
                                             {"status": "failed", "limit": "100"})
        if status != 200 or not isinstance(page, dict):
            return []
        # ISO 8601 UTC strings of one form: their text order is their time order.
        items = sorted(page.get("items") or [], key=lambda r: r.get("failed_at") or "", reverse=True)
        return [
            {
                "at": r.get("failed_at"),
                "phone": shown_phone(r.get("phone")),
                "code": r.get("error_code"),
                "class": r.get("error_class"),
                "message": r.get("error_message"),
            }
            for r in items[:RECENT_ERRORS]
        ]

    # -- the feed

    def metrics(self) -> dict:
        with self._lock:
            campaigns = [self._campaign_view(campaign_id, self._tracks[campaign_id])
                         for campaign_id in self._order if campaign_id in self._tracks
                         and self._tracks[campaign_id].status]
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
            "campaigns": campaigns,
            "numbers": list(self._numbers_seen),
            "invocations": invocations,
            "recent_failures": failures,
        }

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
            "stuck_shards": status.get("stuck_shards") or [],
            "shards": status.get("shards"),
            "started_at": status.get("started_at"),
            "completed_at": status.get("completed_at"),
            "series": {"t": series_t, "progress": progress, "mps": mps},
            "errors": errors[:RECENT_ERRORS],
            "history": list(track.history),
        }

    def page(self) -> str:
        html = (STATIC / "dashboard.html").read_text(encoding="utf-8")
        initial = json.dumps(self.metrics(), default=str).replace("</", "<\\/")
        return html.replace("/*INITIAL_METRICS*/null", initial)

