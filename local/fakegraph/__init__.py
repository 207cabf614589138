"""A fake WhatsApp Cloud (Graph) API for the local stack, the demo, benchmarks and crash tests.

It speaks the part of the Graph API the sender uses: `POST /{version}/{phone_number_id}/messages` with a
template body (and the Marketing Messages API's `.../marketing_messages`, which behaves the same: each record's
`endpoint` says which of the two a request came to), answering like Meta does (success shape, Graph error shape
and codes), and it can post signed status webhooks (`sent` → `delivered` → `read`, or `sent` → `failed`) to a
webhook URL.

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

from .core import FakeGraph
from .process import FakeGraphProcess

__all__ = ["FakeGraph", "FakeGraphProcess"]
