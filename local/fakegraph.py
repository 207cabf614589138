"""A fake WhatsApp Cloud (Graph) API for the local stack, the demo, benchmarks and crash tests.

It speaks the part of the Graph API the sender uses: `POST /{version}/{phone_number_id}/messages` with a
template body, answering like Meta does (success shape, Graph error shape and codes), and it can post signed
status webhooks (`sent` → `delivered` → `read`, or `sent` → `failed`) to a webhook URL.

What makes it useful for crash tests is *when* it records a send: on arrival, before the simulated latency,
like the real API. A client killed while waiting for the response has still sent, and the fake says so.
`stats()["in_flight"]` counts requests whose response is not written yet, so a test can wait for "recorded,
response pending" and kill the client exactly there; `peak_in_flight` is the most there were at once.

Behaviour knobs (constructor keywords, `configure()`, `POST /_fake/config`), checked per request in this order:
token (401/190) → fatal_code → body shape (400/100) → rate_cap_mps (130429) → reject_numbers → fail_ratio.
Only requests that pass all of them are recorded as sends; the others land in `rejected()`.

Python:  `with FakeGraph(latency_ms=50, rate_cap_mps=80) as fake: ... fake.url, fake.sends(), fake.stats()`
         `with FakeGraphProcess(latency_ms=50) as fake: ...` (the same, in a process of its own)
Shell:   `python -m local.fakegraph --port 5005 --latency-ms 50 --rate-cap 80`

Standard library only, plus `requests` (a runtime dependency of the project) for posting webhooks.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import heapq
import hmac
import itertools
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from urllib.parse import parse_qs, urlsplit

import requests

from .loopback import KeepAliveHandler, LoopbackServer, loopback_only

# HTTP status per Graph error code; everything else is a 400, like the real API.
HTTP_STATUS_BY_CODE = {0: 401, 190: 401, 1: 500, 2: 503, 131000: 500, 131016: 503}

ERROR_TITLES = {
    0: "AuthException",
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    4: "Application request limit reached",
    10: "Permission denied",
    100: "Invalid parameter",
    190: "Invalid OAuth access token",
    368: "Temporarily blocked for policies violations",
    130429: "Rate limit hit",
    130497: "Business account is restricted from messaging users in this country",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131016: "Service unavailable",
    131026: "Message undeliverable",
    131031: "Business Account locked",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement",
    131050: "User has stopped marketing messages",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131057: "Account in maintenance mode",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132015: "Template is Paused",
    132016: "Template is Disabled",
}

WEBHOOK_FAILED_CODE = 131026
FAKE_WABA_ID = "100000000000001"
FAKE_DISPLAY_PHONE_NUMBER = "15550001234"
MAX_BODY_BYTES = 1_000_000
MAX_CALLBACK_CHARS = 512
LISTENING = "fakegraph listening on "  # what the command line prints first, before the URL

_MESSAGES_PATH = re.compile(r"^/(v\d+(?:\.\d+)?)/([^/]+)/messages/?$")
_NOT_DIGITS = re.compile(r"\D")


def digits_of(phone: str) -> str:
    """The digits of a phone number: the WhatsApp id and the key of `reject_numbers`."""
    return _NOT_DIGITS.sub("", phone)


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything that can be changed at run time. Immutable: a change swaps the whole object, so a
    request reads one consistent snapshot without taking a lock."""

    token: str | None = None  # expected bearer token; None accepts any (or none)
    latency_ms: float = 0.0  # mean time between a request's arrival and its response
    latency_jitter: float = 0.0  # fraction: 0.2 means each latency is drawn in mean ± 20 %
    rate_cap_mps: float | None = None  # accepted sends per phone_number_id per sliding second
    fail_ratio: float = 0.0  # fraction of requests answered with fail_code
    fail_code: int = 131000
    seed: int | None = None  # makes fail_ratio and webhook_failed_ratio repeatable
    reject_numbers: dict[str, int] = field(default_factory=dict)  # {phone digits: error code}
    fatal_code: int | None = None  # every request gets this error (190: a revoked token)
    webhook_url: str | None = None  # where status webhooks go; None posts nothing
    app_secret: str | None = None  # signs webhooks (X-Hub-Signature-256); None leaves them unsigned
    webhook_failed_ratio: float = 0.0  # fraction of accepted sends that get `failed` after `sent`
    webhook_delay_ms: float = 10.0  # pause between one message's successive statuses

    def updated(self, changes: dict) -> Settings:
        """A validated copy with `changes` applied; ValueError names the first bad setting."""
        unknown = set(changes) - SETTING_NAMES
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        normalized = {}
        for name, value in changes.items():
            try:
                normalized[name] = _NORMALIZERS[name](value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"bad value for {name}: {value!r} ({error})") from None
        return replace(self, **normalized)

    def as_dict(self) -> dict:
        settings = {f.name: getattr(self, f.name) for f in fields(self)}
        settings["reject_numbers"] = dict(self.reject_numbers)  # a copy: callers must not edit the snapshot
        return settings


def _optional(convert: Callable) -> Callable:
    return lambda value: None if value is None else convert(value)


def _at_least_zero(value) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be >= 0")
    return number


def _positive(value) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be > 0 (None for no cap)")
    return number


def _fraction(value) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def _integer(value) -> int:
    if isinstance(value, bool) or int(value) != float(value):
        raise ValueError("must be an integer")
    return int(value)


def _text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _http_url(value) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    return value


def _reject_numbers(value) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of phone number to error code")
    return {digits_of(str(number)): _integer(code) for number, code in value.items()}


_NORMALIZERS: dict[str, Callable] = {
    "token": _optional(_text),
    "latency_ms": _at_least_zero,
    "latency_jitter": _fraction,
    "rate_cap_mps": _optional(_positive),
    "fail_ratio": _fraction,
    "fail_code": _integer,
    "seed": _optional(_integer),
    "reject_numbers": _reject_numbers,
    "fatal_code": _optional(_integer),
    "webhook_url": _optional(_http_url),
    "app_secret": _optional(_text),
    "webhook_failed_ratio": _fraction,
    "webhook_delay_ms": _at_least_zero,
}
SETTING_NAMES = frozenset(f.name for f in fields(Settings))


# ---------------------------------------------------------------------------------------- Graph shapes


def graph_error(code: int, details: str) -> dict:
    """An error body in the Graph shape; clients branch on `code` (and `details`), never on the message."""
    title = ERROR_TITLES.get(code, "Fake Graph error")
    return {
        "error": {
            "message": f"(#{code}) {title}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "Fake" + secrets.token_urlsafe(9),
        }
    }


def send_accepted(to: str, wamid: str) -> dict:
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": digits_of(to)}],
        "messages": [{"id": wamid, "message_status": "accepted"}],
    }


def status_webhook(record: dict, status: str) -> dict:
    """The body Meta posts for one status of one message (graph-api.md, "Status webhook")."""
    event = {
        "id": record["wamid"],
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": digits_of(record["to"]),
    }
    if record["callback"] is not None:
        event["biz_opaque_callback_data"] = record["callback"]
    if status == "failed":
        title = ERROR_TITLES[WEBHOOK_FAILED_CODE]
        event["errors"] = [
            {
                "code": WEBHOOK_FAILED_CODE,
                "title": title,
                "message": title,
                "error_data": {"details": "Message failed to send because the recipient is not reachable."},
            }
        ]
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": FAKE_DISPLAY_PHONE_NUMBER,
            "phone_number_id": record["phone_number_id"],
        },
        "statuses": [event],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": FAKE_WABA_ID, "changes": [{"field": "messages", "value": value}]}],
    }


def signature_header(body: bytes, app_secret: str) -> str:
    """The X-Hub-Signature-256 value: HMAC-SHA256 of the raw body, keyed with the app secret."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class MalformedRequest(ValueError):
    """The send body does not have the shape of a template send (Graph answers 400, code 100)."""


@dataclass(frozen=True)
class SendRequest:
    to: str
    callback: str | None


def parse_send_body(raw: bytes) -> SendRequest:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    if body.get("messaging_product") != "whatsapp":
        raise MalformedRequest("messaging_product must be 'whatsapp'")
    to = body.get("to")
    if not isinstance(to, str) or not 5 <= len(digits_of(to)) <= 15:
        raise MalformedRequest("'to' must be a phone number")
    if body.get("type") != "template":
        raise MalformedRequest("type must be 'template'")
    _check_template(body.get("template"))
    callback = body.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > MAX_CALLBACK_CHARS):
        raise MalformedRequest(
            f"biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_CHARS} characters"
        )
    return SendRequest(to=to, callback=callback)


def _check_template(template) -> None:
    if not isinstance(template, dict):
        raise MalformedRequest("template must be an object")
    if not isinstance(template.get("name"), str) or not template["name"]:
        raise MalformedRequest("template.name is required")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str) or not language["code"]:
        raise MalformedRequest("template.language.code is required")
    if not isinstance(template.get("components", []), list):
        raise MalformedRequest("template.components must be a list")


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    record: dict | None = None  # the send record when accepted


def error_reply(code: int, details: str) -> Reply:
    return Reply(HTTP_STATUS_BY_CODE.get(code, 400), graph_error(code, details))


# ---------------------------------------------------------------------------------------- webhooks


@dataclass
class _WebhookJob:
    """The statuses still to post for one accepted send, posted one after the other."""

    url: str
    app_secret: str | None
    record: dict
    statuses: list[str]
    delay_s: float
    generation: int
    step: int = 0
    attempt: int = 0

    @property
    def remaining(self) -> int:
        return len(self.statuses) - self.step


class WebhookPoster:
    """Posts status webhooks from a few background threads, never from the send path.

    Jobs wait in a heap ordered by due time. A message's next status is scheduled only after its previous
    one was posted (or given up), so statuses of one message arrive in order even with several workers.
    """

    WORKERS = 4
    ATTEMPTS = 3
    TIMEOUT_S = 2.0
    RETRY_BASE_S = 0.05

    def __init__(self):
        self._ready = threading.Condition()
        self._heap: list[tuple[float, int, _WebhookJob]] = []
        self._tiebreak = itertools.count()
        self._generation = 0  # bumped by clear(): jobs of an older generation are dropped
        self._posting = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.posted = 0
        self.failed = 0

    def start(self) -> None:
        self._stopping = False
        self._threads = []
        for n in range(self.WORKERS):
            thread = threading.Thread(target=self._work, name=f"fakegraph-webhooks-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._heap.clear()
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.TIMEOUT_S + 1)

    def submit(
        self, url: str, app_secret: str | None, record: dict, statuses: list[str], delay_s: float
    ) -> None:
        with self._ready:
            job = _WebhookJob(url, app_secret, record, statuses, delay_s, self._generation)
            self._schedule(job, time.monotonic())

    def clear(self) -> None:
        with self._ready:
            self._generation += 1
            self._heap.clear()
            self.posted = self.failed = 0

    def pending(self) -> int:
        """Status posts not done yet, including the ones being posted right now."""
        with self._ready:
            return sum(job.remaining for _, _, job in self._heap) + self._posting

    def _schedule(self, job: _WebhookJob, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._tiebreak), job))
        self._ready.notify()

    def _work(self) -> None:
        session = requests.Session()  # one per thread: Session is not thread-safe, pooling still helps
        try:
            while (job := self._next_due()) is not None:
                self._finish(job, ok=self._post(session, job))
        finally:
            session.close()

    def _next_due(self) -> _WebhookJob | None:
        with self._ready:
            while not self._stopping:
                wait_s = self._heap[0][0] - time.monotonic() if self._heap else None
                if wait_s is not None and wait_s <= 0:
                    self._posting += 1
                    return heapq.heappop(self._heap)[2]
                self._ready.wait(wait_s)
            return None

    def _post(self, session: requests.Session, job: _WebhookJob) -> bool:
        body = json.dumps(status_webhook(job.record, job.statuses[job.step]), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if job.app_secret:
            headers["X-Hub-Signature-256"] = signature_header(body, job.app_secret)
        try:
            with session.post(job.url, data=body, headers=headers, timeout=self.TIMEOUT_S) as response:
                return 200 <= response.status_code < 300
        except requests.RequestException:
            return False

    def _finish(self, job: _WebhookJob, ok: bool) -> None:
        with self._ready:
            self._posting -= 1
            if job.generation != self._generation or self._stopping:
                return
            if not ok and job.attempt + 1 < self.ATTEMPTS:
                job.attempt += 1
                self._schedule(job, time.monotonic() + self.RETRY_BASE_S * 2**job.attempt)
                return
            # Posted, or given up after the last attempt: either way the next status follows, as Meta's do.
            if ok:
                self.posted += 1
            else:
                self.failed += 1
            job.step += 1
            job.attempt = 0
            if job.remaining:
                self._schedule(job, time.monotonic() + job.delay_s)


# ---------------------------------------------------------------------------------------- the fake


class FakeGraph:
    """The fake Graph API: an HTTP server on 127.0.0.1 plus the records and stats tests look at.

    `clock` (constructor only) is the monotonic clock of the rate cap's sliding window; tests pass a frozen
    one to make "a burst within one second" exact instead of a matter of timing.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        **settings,
    ):
        self.host = loopback_only(host, "FakeGraph")
        self.port = port
        self._settings = Settings().updated(settings)
        self._clock = clock
        self._lock = threading.Lock()  # guards records, counters, rate windows and the seeded random draws
        self._latency_changed = threading.Condition()
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._webhooks = WebhookPoster()
        self._wamid_prefix = secrets.token_hex(4).upper()  # keeps wamids unique across instances and resets
        self._wamid_numbers = itertools.count(1)
        self._jitter = random.Random()  # not the seeded one: latency draws must not shift the failure pattern
        self._in_flight = 0
        self._clear_state()

    # ------------------------------------------------------------------ life cycle

    def start(self) -> FakeGraph:
        """Serves in a daemon thread. After stop() it starts again on the same port, records kept, which is
        how a test simulates an outage of the API."""
        if self._server is not None:
            raise RuntimeError("FakeGraph already started")
        self._stopping = False
        self._server = _Server((self.host, self.port), _Handler, fake=self)
        self.port = self._server.server_port
        self._webhooks.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakegraph", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops like a server that went away: pending responses are never written, open connections drop."""
        if self._server is None:
            return
        with self._latency_changed:
            self._stopping = True
            self._latency_changed.notify_all()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._webhooks.stop()
        self._server = None

    def __enter__(self) -> FakeGraph:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (the send URL is {url}/{version}/{phone_number_id}/messages)."""
        if self._server is None:
            raise RuntimeError("FakeGraph is not running")
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ inspection and control

    def sends(self, since: int = 0) -> list[dict]:
        """Accepted sends in arrival order (copies); `since` skips records with seq <= since."""
        with self._lock:
            return [dict(record) for record in self._sends[max(since, 0) :]]  # seq n sits at index n - 1

    def rejected(self) -> list[dict]:
        """Requests answered with an error, with their `code`, in arrival order (copies)."""
        with self._lock:
            return [dict(record) for record in self._rejected]

    def stats(self) -> dict:
        with self._lock:
            stats = {
                "accepted": len(self._sends),
                "rejected": len(self._rejected),
                "by_code": {str(code): count for code, count in sorted(self._by_code.items())},
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "duplicates": self._duplicates,
                "duplicate_keys": self._duplicate_keys,
            }
        stats["webhooks_posted"] = self._webhooks.posted
        stats["webhooks_failed"] = self._webhooks.failed
        stats["webhooks_pending"] = self._webhooks.pending()
        return stats

    def config(self) -> dict:
        return self._settings.as_dict()

    def configure(self, **changes) -> dict:
        """Changes some settings (ValueError on unknown or bad ones) and returns them all.

        A new latency applies to requests already waiting too: a test can hold responses with a huge
        latency and release them with `configure(latency_ms=0)`.
        """
        with self._lock:
            self._settings = self._settings.updated(changes)
            if "seed" in changes:
                self._seed_draws()
        with self._latency_changed:
            self._latency_changed.notify_all()
        return self.config()

    def reset(self) -> None:
        """Forgets sends, rejections, stats and queued webhooks; the seeded draws start over."""
        with self._lock:
            self._clear_state()
        self._webhooks.clear()

    def _clear_state(self) -> None:
        self._sends: list[dict] = []
        self._rejected: list[dict] = []
        self._by_code: Counter[int] = Counter()
        self._times_seen: Counter[str] = Counter()
        self._duplicates = 0  # accepted sends whose key had been sent before
        self._peak_in_flight = self._in_flight  # the most requests open at once since the reset
        self._duplicate_keys = 0  # keys sent more than once
        self._rate_windows: dict[str, deque[float]] = {}
        self._seed_draws()

    def _seed_draws(self) -> None:
        seed = self._settings.seed
        self._fail_draws = random.Random(seed)
        self._webhook_draws = random.Random(None if seed is None else f"{seed}:webhooks")

    # ------------------------------------------------------------------ the send path

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def request_finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def handle_send(self, phone_number_id: str, authorization: str | None, raw_body: bytes) -> Reply:
        """Decides and records one send request; the latency comes afterwards (see wait_latency)."""
        settings = self._settings
        if settings.token is not None and not _bearer_matches(authorization, settings.token):
            return self._reject(
                error_reply(190, "Invalid OAuth access token - Cannot parse access token"),
                phone_number_id,
                None,
            )
        if settings.fatal_code is not None:
            return self._reject(
                error_reply(settings.fatal_code, "fatal_code is set on the fake"), phone_number_id, None
            )
        try:
            request = parse_send_body(raw_body)
        except MalformedRequest as error:
            return self._reject(error_reply(100, str(error)), phone_number_id, None)
        with self._lock:
            reply = self._admission_error(settings, phone_number_id, request)
            if reply is not None:
                return self._reject_locked(reply, phone_number_id, request)
            record = self._record_locked(phone_number_id, request)
            webhook_statuses = self._webhook_statuses_locked(settings)
        if webhook_statuses:
            self._webhooks.submit(
                settings.webhook_url,
                settings.app_secret,
                record,
                webhook_statuses,
                settings.webhook_delay_ms / 1000,
            )
        return Reply(200, send_accepted(request.to, record["wamid"]), record)

    def _admission_error(
        self, settings: Settings, phone_number_id: str, request: SendRequest
    ) -> Reply | None:
        if settings.rate_cap_mps is not None and not self._take_rate_slot_locked(
            settings.rate_cap_mps, phone_number_id
        ):
            return error_reply(130429, f"more than {settings.rate_cap_mps:g} messages/s on {phone_number_id}")
        rejected_code = settings.reject_numbers.get(digits_of(request.to))
        if rejected_code is not None:
            return error_reply(rejected_code, f"reject_numbers lists {request.to}")
        if settings.fail_ratio and self._fail_draws.random() < settings.fail_ratio:
            return error_reply(settings.fail_code, "fail_ratio picked this request")
        return None

    def _take_rate_slot_locked(self, cap_mps: float, phone_number_id: str) -> bool:
        """Sliding one-second window per number. A request refused with 130429 takes no slot; one refused
        later (reject_numbers, fail_ratio) does, as it went through the number's pipeline."""
        now = self._clock()
        window = self._rate_windows.setdefault(phone_number_id, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= cap_mps:
            return False
        window.append(now)
        return True

    def _record_locked(self, phone_number_id: str, request: SendRequest) -> dict:
        record = {
            "seq": len(self._sends) + 1,
            "to": request.to,
            "callback": request.callback,
            "phone_number_id": phone_number_id,
            "wamid": f"wamid.FAKE{self._wamid_prefix}{next(self._wamid_numbers):012d}",
            "at": time.time(),
        }
        self._sends.append(record)
        key = f"callback:{request.callback}" if request.callback is not None else f"to:{request.to}"
        seen = self._times_seen[key]
        self._times_seen[key] = seen + 1
        if seen >= 1:
            self._duplicates += 1
        if seen == 1:
            self._duplicate_keys += 1
        return record

    def _webhook_statuses_locked(self, settings: Settings) -> list[str]:
        if settings.webhook_url is None:
            return []
        failed = (
            settings.webhook_failed_ratio and self._webhook_draws.random() < settings.webhook_failed_ratio
        )
        return ["sent", "failed"] if failed else ["sent", "delivered", "read"]

    def _reject(self, reply: Reply, phone_number_id: str, request: SendRequest | None) -> Reply:
        with self._lock:
            return self._reject_locked(reply, phone_number_id, request)

    def _reject_locked(self, reply: Reply, phone_number_id: str, request: SendRequest | None) -> Reply:
        code = reply.body["error"]["code"]
        self._by_code[code] += 1
        self._rejected.append(
            {
                "seq": len(self._rejected) + 1,
                "to": request.to if request else None,
                "callback": request.callback if request else None,
                "phone_number_id": phone_number_id,
                "code": code,
                "http_status": reply.status,
                "at": time.time(),
            }
        )
        return reply

    def latency_draw(self) -> float:
        """Where in the jitter range this request's latency falls, from -1 to 1."""
        return self._jitter.uniform(-1.0, 1.0)

    def wait_latency(self, arrived: float, draw: float) -> bool:
        """Holds the response until the latency has passed; False when the fake stops meanwhile.

        The latency is re-read on every wake-up, so configure() affects requests already waiting.
        """
        if self._settings.latency_ms == 0:
            return not self._stopping
        with self._latency_changed:
            while not self._stopping:
                settings = self._settings
                latency_s = settings.latency_ms / 1000 * (1 + draw * settings.latency_jitter)
                remaining = arrived + latency_s - time.monotonic()
                if remaining <= 0:
                    return True
                self._latency_changed.wait(remaining)
            return False


def _bearer_matches(authorization: str | None, token: str) -> bool:
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


# ---------------------------------------------------------------------------------------- HTTP


class _Server(LoopbackServer):
    def __init__(self, address, handler, fake: FakeGraph):
        self.fake = fake
        super().__init__(address, handler)


class _Handler(KeepAliveHandler):
    server: _Server

    def do_POST(self) -> None:
        path, query = self._path_and_query()
        if match := _MESSAGES_PATH.match(path):
            self._serve_send(phone_number_id=match.group(2))
        elif path == "/_fake/config":
            self._serve_configure()
        elif path == "/_fake/reset":
            self._read_body()
            self.server.fake.reset()
            self._send_json(200, {"ok": True})
        else:
            self._not_found()

    def do_GET(self) -> None:
        path, query = self._path_and_query()
        fake = self.server.fake
        if path == "/_fake/sends":
            since = query.get("since", ["0"])[0]
            if not since.isdigit():
                self._send_json(400, graph_error(100, "since must be a sequence number"))
                return
            self._send_json(200, fake.sends(since=int(since)))
        elif path == "/_fake/rejected":
            self._send_json(200, fake.rejected())
        elif path == "/_fake/stats":
            self._send_json(200, fake.stats())
        elif path == "/_fake/config":
            self._send_json(200, fake.config())
        else:
            self._not_found()

    def _serve_send(self, phone_number_id: str) -> None:
        fake = self.server.fake
        fake.request_started()
        answering = False
        try:
            arrived = time.monotonic()
            draw = fake.latency_draw()
            body = self._read_body()
            reply = fake.handle_send(phone_number_id, self.headers.get("Authorization"), body)
            if not fake.wait_latency(arrived, draw):
                self.close_connection = True  # stopped: like a dead server, never answer
                return
            extra = (
                {"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'}
                if reply.status == 401
                else {}
            )
            # No longer in flight before its answer goes out: a client that has the answer must
            # never find it still counted (it was, for the moment between the write and this).
            answering = True
            fake.request_finished()
            self._send_json(reply.status, reply.body, extra)
        finally:
            if not answering:
                fake.request_finished()

    def _serve_configure(self) -> None:
        try:
            changes = json.loads(self._read_body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of settings")
            self._send_json(200, self.server.fake.configure(**changes))
        except ValueError as error:
            self._send_json(400, graph_error(100, str(error)))

    def _path_and_query(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query)

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            # Without a trustworthy length the rest of the stream cannot be framed: answer, then hang up.
            self.close_connection = True
            return b""
        return self.rfile.read(length)

    def _not_found(self) -> None:
        if self.command == "POST":
            self._read_body()  # so the connection stays usable for the next request
        self._send_json(404, graph_error(100, f"Unsupported request: {self.command} {self.path}"))

    def _send_json(self, status: int, payload, extra_headers: dict | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


# ---------------------------------------------------------------------------------------- in its own process


class FakeGraphProcess:
    """The fake in a process of its own, driven over its /_fake/ endpoints with FakeGraph's methods.

    In-process, the fake's threads share the GIL of whatever else that process runs, and a request
    that arrives while another thread holds it is stamped late; a benchmark measuring pacing against
    the fake's sliding second would then measure the stamping. Its own process (optionally ahead of
    the others on its core: `nice=-10`, as root) stamps arrivals when they arrive, as Meta's servers,
    which share nothing with the sender, do.
    """

    def __init__(self, nice: int = 0, **settings):
        Settings().updated(settings)  # a bad setting fails here, not in the child
        self.nice = nice
        self._settings = settings
        self._process = None
        self._session = requests.Session()
        self.url = ""

    def start(self, timeout: float = 30.0) -> FakeGraphProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local.fakegraph", "--port", "0", "--nice", str(self.nice)],
            stdout=subprocess.PIPE, text=True,
        )
        ready = threading.Timer(timeout, self._process.kill)  # a child that never says where it listens
        ready.start()
        line = self._process.stdout.readline()
        ready.cancel()
        if not line.startswith(LISTENING):
            self.stop()
            raise RuntimeError(f"the fake did not start: {line!r}")
        self.url = line.split()[-1]
        self.configure(**self._settings)  # not on its command line: a token there shows in `ps`
        return self

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._process:
            self._process.stdout.close()
        self._session.close()

    def __enter__(self) -> FakeGraphProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self._process.pid

    def configure(self, **changes) -> dict:
        return self._call("POST", "config", json=changes)

    def reset(self) -> None:
        self._call("POST", "reset")

    def config(self) -> dict:
        return self._call("GET", "config")

    def stats(self) -> dict:
        return self._call("GET", "stats")

    def sends(self, since: int = 0) -> list[dict]:
        return self._call("GET", "sends", params={"since": since})

    def rejected(self) -> list[dict]:
        return self._call("GET", "rejected")

    def _call(self, method: str, what: str, **kwargs):
        response = self._session.request(method, f"{self.url}/_fake/{what}", timeout=30, **kwargs)
        if response.status_code == 400:
            raise ValueError(response.json()["error"]["error_data"]["details"])
        response.raise_for_status()
        return response.json()


# ---------------------------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.fakegraph", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5005, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--token", help="expected bearer token (default: accept any)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter", type=float, default=0.0, help="fraction, 0.2 = ±20 %%")
    parser.add_argument("--rate-cap", type=float, dest="rate_cap_mps", help="messages/s per phone number id")
    parser.add_argument("--fail-ratio", type=float, default=0.0)
    parser.add_argument("--fail-code", type=int, default=131000)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--reject",
        action="append",
        default=[],
        metavar="NUMBER=CODE",
        help="answer sends to NUMBER with error CODE (repeatable)",
    )
    parser.add_argument(
        "--fatal-code", type=int, help="answer every send with this error (190: revoked token)"
    )
    parser.add_argument("--webhook-url")
    parser.add_argument("--app-secret")
    parser.add_argument("--webhook-failed-ratio", type=float, default=0.0)
    parser.add_argument("--webhook-delay-ms", type=float, default=10.0)
    parser.add_argument("--nice", type=int, default=0,
                        help="added to the process's nice value before it serves (below 0 needs root)")
    args = parser.parse_args(argv)
    try:
        args.reject_numbers = dict(_number_and_code(item) for item in args.reject)
    except ValueError:
        parser.error("--reject takes NUMBER=CODE, e.g. --reject 919876543210=131026")
    return args


def _number_and_code(item: str) -> tuple[str, int]:
    number, _, code = item.partition("=")
    return number, int(code)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # before any thread starts: Linux keeps a nice value per thread
    settings = {
        name: getattr(args, name)
        for name in (
            "token",
            "latency_ms",
            "latency_jitter",
            "rate_cap_mps",
            "fail_ratio",
            "fail_code",
            "seed",
            "reject_numbers",
            "fatal_code",
            "webhook_url",
            "app_secret",
            "webhook_failed_ratio",
            "webhook_delay_ms",
        )
    }
    try:
        fake = FakeGraph(port=args.port, **settings)
    except ValueError as error:
        print(f"fakegraph: {error}", file=sys.stderr)
        return 2
    try:
        fake.start()
    except OSError as error:
        reason = (
            "is already in use" if error.errno == errno.EADDRINUSE else f"cannot be bound ({error.strerror})"
        )
        print(f"fakegraph: port {args.port} on {fake.host} {reason}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    print(f"{LISTENING}{fake.url}", flush=True)
    while not stop_requested.wait(timeout=1.0):
        pass  # a timed wait keeps the main thread responsive to signals
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
