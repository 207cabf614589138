"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (GET /openapi.json), with
schemathesis, over real HTTP on the local gateway (the very handler, moto behind it): no request it can
generate, valid (positive) or not (negative), may get a server error (5xx).

Bounded: at most EXAMPLES cases per operation, generation mode and target (random ids, and the id of a
real campaign with recipients), derandomized (the same cases every run), no example database: a few
hundred requests in all.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

EXAMPLES = 20
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture
def api(make_stack):
    stack = make_stack(api_port=0, fake_latency_ms=5)
    stack.start_gateway(dashboard=False)
    return stack.gateway.url


def real_campaign(url: str) -> str:
    """A draft with recipients, so that generated requests reach past "campaign not found"."""
    created = requests.post(f"{url}/campaigns", timeout=30, json={
        "name": "fuzz target", "phone_number_id": "1234567890",
        "template": {"name": "fuzz", "language": "en_US",
                     "components": [{"type": "body", "parameters": [{"type": "text", "text": "{{1}}"}]}]},
        "recipients": [{"phone": f"+9198{n:08d}", "variables": [f"n{n}"]} for n in range(5)],
    })
    assert created.status_code == 201, created.text
    return created.json()["id"]


def test_no_generated_request_gets_a_server_error(api):
    schema_doc = requests.get(f"{api}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(schema_doc)
    campaign_id = real_campaign(api)
    session = requests.Session()
    statuses: dict[str, Counter] = defaultdict(Counter)
    server_errors: list[str] = []
    unsatisfiable: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]

    def fuzz(operation, strategy) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            response = case.call(base_url=api, session=session, timeout=60)
            statuses[operation.label][response.status_code] += 1
            if response.status_code >= 500:
                server_errors.append(f"{response.status_code} {case.as_curl_command()}\n{response.text[:300]}")

        run()

    for operation in operations:
        for mode in MODES:
            strategies = {"": operation.as_strategy(generation_mode=mode)}
            if "{id}" in operation.path:
                # Random ids mostly meet 404s: the same cases again against a real campaign.
                strategies[" on a real campaign"] = operation.as_strategy(
                    generation_mode=mode, path_parameters={"id": campaign_id})
            for where, strategy in strategies.items():
                try:
                    fuzz(operation, strategy)
                except Unsatisfiable:
                    unsatisfiable.append(f"{operation.label}{where} ({mode.value})")  # nothing invalid to make

    total = sum(sum(c.values()) for c in statuses.values())
    summary = "\n".join(f"  {label}: {dict(sorted(counts.items()))}" for label, counts in sorted(statuses.items()))
    print(f"\nschemathesis: {total} requests over {len(operations)} operations, "
          f"{len(server_errors)} server errors\n{summary}\n  (nothing invalid to generate for: {unsatisfiable})")
    assert server_errors == [], "\n\n".join(server_errors[:5])
    assert total >= len(operations) * len(MODES)
