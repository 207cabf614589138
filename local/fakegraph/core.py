"""The fake itself: its settings, the records and stats tests look at, and the decision on each send."""

from __future__ import annotations

import hmac
import itertools
import random
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from ..loopback import loopback_only
from .server import FakeGraphHandler, FakeGraphServer
from .settings import Settings
from .webhooks import WebhookPoster
from .wire import MalformedRequest, Reply, SendRequest, digits_of, error_reply, parse_send_body, send_accepted


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
        self._server: FakeGraphServer | None = None
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
        self._server = FakeGraphServer((self.host, self.port), FakeGraphHandler, fake=self)
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

    def handle_send(self, phone_number_id: str, authorization: str | None, raw_body: bytes,
                    endpoint: str = "messages") -> Reply:
        """Decides and records one send request; the latency comes afterwards (see wait_latency).

        `endpoint` is the path's last part, `messages` or `marketing_messages` (the Marketing Messages
        API): both behave the same, and every record names the one the request came to."""
        settings = self._settings
        if settings.token is not None and not _bearer_matches(authorization, settings.token):
            return self._reject(
                error_reply(190, "Invalid OAuth access token - Cannot parse access token"),
                phone_number_id,
                None,
                endpoint,
            )
        if settings.fatal_code is not None:
            return self._reject(
                error_reply(settings.fatal_code, "fatal_code is set on the fake"), phone_number_id, None, endpoint
            )
        try:
            request = parse_send_body(raw_body)
        except MalformedRequest as error:
            return self._reject(error_reply(100, str(error)), phone_number_id, None, endpoint)
        with self._lock:
            reply = self._admission_error(settings, phone_number_id, request)
            if reply is not None:
                return self._reject_locked(reply, phone_number_id, request, endpoint)
            record = self._record_locked(phone_number_id, request, endpoint)
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

    def _record_locked(self, phone_number_id: str, request: SendRequest, endpoint: str = "messages") -> dict:
        record = {
            "seq": len(self._sends) + 1,
            "to": request.to,
            "callback": request.callback,
            "phone_number_id": phone_number_id,
            "endpoint": endpoint,
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

    def _reject(self, reply: Reply, phone_number_id: str, request: SendRequest | None,
                endpoint: str = "messages") -> Reply:
        with self._lock:
            return self._reject_locked(reply, phone_number_id, request, endpoint)

    def _reject_locked(self, reply: Reply, phone_number_id: str, request: SendRequest | None,
                       endpoint: str = "messages") -> Reply:
        code = reply.body["error"]["code"]
        self._by_code[code] += 1
        self._rejected.append(
            {
                "seq": len(self._rejected) + 1,
                "to": request.to if request else None,
                "callback": request.callback if request else None,
                "phone_number_id": phone_number_id,
                "endpoint": endpoint,
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
