"""An independent Graph API fake for the benchmarks of the path users run (bench.userpath, bench/bullmq).

Not the project's local/fakegraph/: a small server of its own, so that what the product is measured
against is not something the product's authors tuned alongside it. It answers
`POST /{version}/{phone_number_id}/messages` after a latency drawn uniformly from latency ± jitter
(50 ms ± 20 % by default), accepts at most `--cap` sends per phone number in any sliding second
(counted on arrival, as the provider counts them) and answers Graph error 130429 above it. It counts
what arrives per whole second, and can post HMAC-SHA256-signed status webhooks (`sent` at once,
`delivered` a little later, one status per POST as Meta usually sends them) to `--webhook-url`.

    python -m bench.graphfake --port 5005 [--cap 80] [--latency-ms 50] [--jitter 0.2]
                              [--webhook-url URL --app-secret SECRET]

    GET  /_arrivals  when each accepted send arrived (epoch seconds)
    GET  /_stats   {"accepted", "refused", "first_accepted", "last_accepted", "per_second": {second: [accepted,
                   refused]}, "duplicates", "webhooks": {"posted", "failed", "backlog"}}
    POST /_reset   forget everything counted
    POST /_config  {"webhook_url", "app_secret"} (either may be null to turn webhooks off)

Standard library only (asyncio), one process, one thread: its own CPU stays small next to the stack's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import secrets
import time
from collections import Counter, deque
from urllib.parse import urlsplit

RATE_LIMIT_BODY = {
    "error": {
        "message": "(#130429) Rate limit hit",
        "type": "OAuthException",
        "code": 130429,
        "error_data": {"messaging_product": "whatsapp", "details": "Cloud API message throughput has been reached."},
        "fbtrace_id": "bench",
    }
}


class Fake:
    def __init__(self, cap: int, latency_ms: float, jitter: float, token: str | None):
        self.cap = cap
        self.latency = latency_ms / 1000.0
        self.jitter = jitter
        self.token = token
        self.webhook_url: str | None = None
        self.app_secret: str | None = None
        self.reset()

    def reset(self) -> None:
        self.window: dict[str, deque[float]] = {}  # phone number id → arrivals of the sliding second
        self.per_second: dict[int, list[int]] = {}
        self.accepted = 0
        self.refused = 0
        self.first_accepted: float | None = None
        self.last_accepted: float | None = None
        self.callbacks: Counter = Counter()
        self.arrivals: list[float] = []  # when each accepted send arrived
        self.refusals: list[float] = []  # when each refused one did
        self.webhooks_due = 0  # statuses to post, posted or not yet
        self.webhooks_posted = 0
        self.webhooks_failed = 0
        self.webhook_queue: asyncio.Queue | None = None

    # -- the messages endpoint ------------------------------------------------------------------

    def arrive(self, number: str, now: float) -> bool:
        """Counts one arrival; True if it is within the cap of the sliding second."""
        arrivals = self.window.setdefault(number, deque())
        while arrivals and now - arrivals[0] >= 1.0:
            arrivals.popleft()
        second = self.per_second.setdefault(int(now), [0, 0])
        if len(arrivals) >= self.cap:
            self.refused += 1
            self.refusals.append(now)
            second[1] += 1
            return False
        arrivals.append(now)
        self.arrivals.append(now)
        self.accepted += 1
        second[0] += 1
        self.first_accepted = self.first_accepted or now
        self.last_accepted = now
        return True

    async def messages(self, number: str, headers: dict, body: bytes) -> tuple[int, dict]:
        now = time.time()
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}
        try:
            payload = json.loads(body)
            phone = str(payload["to"])
        except (ValueError, KeyError, TypeError):
            return 400, {"error": {"message": "Invalid parameter", "type": "OAuthException", "code": 100}}
        accepted = self.arrive(number, now)
        await asyncio.sleep(self.latency * random.uniform(1 - self.jitter, 1 + self.jitter))
        if not accepted:
            return 400, RATE_LIMIT_BODY
        wamid = "wamid." + secrets.token_hex(12)
        callback = payload.get("biz_opaque_callback_data")
        if callback:
            self.callbacks[callback] += 1
        if self.webhook_url and self.app_secret:
            self.webhooks_due += 2
            loop = asyncio.get_running_loop()
            self._queue().put_nowait((0.0, "sent", number, phone, wamid, callback))
            delay = random.uniform(0.2, 1.0)
            loop.call_later(delay, self._queue().put_nowait, (0.0, "delivered", number, phone, wamid, callback))
        return 200, {"messaging_product": "whatsapp", "contacts": [{"input": phone, "wa_id": phone}],
                     "messages": [{"id": wamid}]}

    def stats(self) -> dict:
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
            "per_second": {str(second): counts for second, counts in sorted(self.per_second.items())},
            "refused_at": [round(t - (self.first_accepted or t), 2) for t in self.refusals],
            "duplicates": sum(1 for n in self.callbacks.values() if n > 1),
            "webhooks": {"posted": self.webhooks_posted, "failed": self.webhooks_failed,
                         "backlog": self.webhooks_due - self.webhooks_posted - self.webhooks_failed},
        }

    # -- status webhooks ------------------------------------------------------------------------

    def _queue(self) -> asyncio.Queue:
        if self.webhook_queue is None:
            self.webhook_queue = asyncio.Queue()
            for _ in range(WEBHOOK_CONNECTIONS):
                asyncio.get_running_loop().create_task(self._post_webhooks(self.webhook_queue))
        return self.webhook_queue

    async def _post_webhooks(self, queue: asyncio.Queue) -> None:
        """One keep-alive connection to the webhook URL, posting one status at a time from the queue."""
        reader = writer = None
        while True:
            _, status, number, phone, wamid, callback = await queue.get()
            if queue is not self.webhook_queue or not self.webhook_url:
                return  # reset or turned off
            body = json.dumps(_status_body(status, number, phone, wamid, callback)).encode()
            signature = "sha256=" + hmac.new(self.app_secret.encode(), body, hashlib.sha256).hexdigest()
            url = urlsplit(self.webhook_url)
            request = (f"POST {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
                       f"X-Hub-Signature-256: {signature}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            for _attempt in range(2):  # a keep-alive connection the server closed: once more on a new one
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection(url.hostname, url.port or 80), WEBHOOK_TIMEOUT)
                    writer.write(request)
                    status_code, _, _ = await asyncio.wait_for(_read_response(reader), WEBHOOK_TIMEOUT)
                    if status_code == 200:
                        self.webhooks_posted += 1
                    else:
                        self.webhooks_failed += 1
                    break
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    if writer is not None:
                        writer.close()
                    reader = writer = None
            else:
                self.webhooks_failed += 1


WEBHOOK_CONNECTIONS = 4
WEBHOOK_TIMEOUT = 10.0  # seconds for one webhook's connection or answer; then once more on a new connection


def _status_body(status: str, number: str, phone: str, wamid: str, callback: str | None) -> dict:
    entry = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": phone}
    if callback:
        entry["biz_opaque_callback_data"] = callback
    return {"object": "whatsapp_business_account", "entry": [{"id": "bench", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": number}, "statuses": [entry]}}]}]}


async def _read_headers(reader: asyncio.StreamReader) -> tuple[str, dict]:
    start = (await reader.readuntil(b"\r\n")).decode("latin-1").strip()
    headers = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return start, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    start, headers = await _read_headers(reader)
    body = await reader.readexactly(int(headers.get("content-length") or 0))
    return int(start.split()[1]), headers, body


def serve(fake: Fake):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    start, headers = await _read_headers(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                method, target, _ = start.split(" ", 2)
                path = urlsplit(target).path
                parts = path.strip("/").split("/")
                if method == "POST" and len(parts) == 3 and parts[2] == "messages":
                    status, answer = await fake.messages(parts[1], headers, body)
                elif method == "GET" and path == "/_stats":
                    status, answer = 200, fake.stats()
                elif method == "GET" and path == "/_arrivals":
                    status, answer = 200, fake.arrivals
                elif method == "POST" and path == "/_reset":
                    fake.reset()
                    status, answer = 200, {}
                elif method == "POST" and path == "/_config":
                    config = json.loads(body or b"{}")
                    fake.webhook_url = config.get("webhook_url")
                    fake.app_secret = config.get("app_secret")
                    status, answer = 200, {}
                else:
                    status, answer = 404, {"error": {"message": f"no route {method} {path}", "code": 100}}
                data = json.dumps(answer).encode()
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                             f"\r\n".encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    return handle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cap", type=int, default=80, help="accepted sends per phone number per sliding second")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--jitter", type=float, default=0.2, help="± fraction of the latency")
    parser.add_argument("--token", default=None, help="the bearer token to require (none: any)")
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--app-secret", default=None)
    args = parser.parse_args(argv)
    fake = Fake(args.cap, args.latency_ms, args.jitter, args.token)
    fake.webhook_url, fake.app_secret = args.webhook_url, args.app_secret

    async def run() -> None:
        server = await asyncio.start_server(serve(fake), "127.0.0.1", args.port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
