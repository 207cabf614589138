"""Settings read from the environment, with production defaults: parsed once per process.

`settings()` parses the environment at its first call (a Lambda cold start: no module calls it at
import) and returns that same object after; Lambda never changes a running environment's variables.
A process whose environment does change between runs (the tests' fixtures, the local stack) re-reads
it with `reload()`, and only there.

Each field is the environment variable of its name, upper-cased (`aws_region`: AWS_REGION, else
AWS_DEFAULT_REGION), parsed as the type of its default; an unset or empty variable keeps the default,
and a value that does not parse is refused with the variable's name. A frozen dataclass rather than a
pydantic model: see docs/design.md, "Settings".

Endpoints are not settings of ours: boto3 and pynamodb honour the standard
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> variables, which is how the local
stack points the very same code at moto's server and at the local Lambda runtime.
Powertools reads its own POWERTOOLS_* variables.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields


@dataclass(frozen=True)
class Settings:
    table_name: str = "campaigns"
    sender_function_name: str = "sender"
    whatsapp_secret_arn: str = ""
    graph_api_url: str = "https://graph.facebook.com"
    graph_api_version: str = "v23.0"
    # A sender's lease lasts this long past its last heartbeat; recovery takes over after it.
    lease_seconds: float = 60.0
    # How often a live sender renews its lease and flushes counters.
    heartbeat_seconds: float = 1.0
    # Connect and read timeouts of one Graph request.
    connect_timeout_seconds: float = 3.05
    read_timeout_seconds: float = 10.0
    # Allowance for clock skew between the sender and the recovery function.
    clock_skew_seconds: float = 2.0
    # The most sends in flight at once in one sender batch: the ceiling of its window (which holds
    # the pace with as few as it can, ratelimit.SendWindow) and the most a kill leaves in doubt.
    max_in_flight: int = 32
    # Attempts per recipient on retryable errors before it fails with the last code.
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    # How long a webhook may take to prove that an in-doubt send happened (policy resend).
    in_doubt_grace_seconds: float = 900.0
    # Policy auto (campaigns/proof.py): absence is proven once webhooks reported on a send claimed
    # after an in-doubt one, and this long has passed since it went in doubt with no status for it
    # (Meta posts `sent` within seconds). Its shard waits for a proof either way at most
    # PROOF_WAIT_SECONDS, looking again every PROOF_RECHECK_SECONDS; then it stays in doubt
    # (webhooks silent: nothing is resent).
    proof_quiet_seconds: float = 30.0
    proof_wait_seconds: float = 600.0
    proof_recheck_seconds: float = 10.0
    # A number of another account sends with its own token, in a secret whose name starts with this
    # (the stack's name and a slash: the functions may read only those; PUT /numbers refuses others).
    secret_prefix: str = ""
    # The messaging limit's rolling window (campaigns/reach.py): Meta's day.
    messaging_window_seconds: float = 86400.0
    # Each shard carries at most this many messages/s, so a 1000 mps campaign gets 13 shards.
    shard_rate: int = 80
    # A request body larger than this is refused (413) before it is parsed. Lambda takes at most
    # 6 MB per synchronous request (API Gateway itself 10 MB), headers and JSON escaping included.
    max_import_bytes: int = 5 * 1024 * 1024
    # Rows per import request: what one API call can look up and write well within API Gateway's
    # 29 s (about 4 DynamoDB batch calls per 100 rows). Larger lists are sent as several imports.
    max_import_rows: int = 10_000
    # Opt-out keywords beside STOP and UNSUBSCRIBE, comma-separated (campaigns/suppressions.py): an
    # inbound message whose text or button is one of them, case and spaces ignored, suppresses its sender.
    opt_out_keywords: str = ""
    # The table's region (pynamodb's Meta.region): Lambda sets AWS_REGION, boto3's own is AWS_DEFAULT_REGION.
    aws_region: str = field(default="us-east-1", metadata={"env": ("AWS_REGION", "AWS_DEFAULT_REGION")})

    def __post_init__(self):
        usable = self.lease_seconds - self.lease_safety_seconds
        if usable < 2 * self.heartbeat_seconds:
            raise ValueError(
                f"LEASE_SECONDS={self.lease_seconds} leaves {usable:.2f}s to send between heartbeats: it must "
                f"exceed connect + read timeouts + clock skew ({self.lease_safety_seconds:.2f}s) by at least "
                f"two heartbeats ({2 * self.heartbeat_seconds:.2f}s)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Parse `environ` (this process's environment, not cached: `settings()` is)."""
        return cls(**from_environment(cls, environ))

    @property
    def stop_margin_seconds(self) -> float:
        """Remaining time below which a sender stops claiming: one request must still fit."""
        return self.connect_timeout_seconds + self.read_timeout_seconds + 2.0

    @property
    def lease_safety_seconds(self) -> float:
        """How long before its lease expires (by its own clock) a sender stops posting.

        A POST started before this point ends (or times out) before the lease expires
        even on a recovery clock that runs `clock_skew_seconds` ahead, so when recovery
        takes over, no send of the old holder can still be on the wire.
        """
        return self.connect_timeout_seconds + self.read_timeout_seconds + self.clock_skew_seconds


def env_names(f: Field) -> tuple[str, ...]:
    """The variables that set a settings field, first found first: its name upper-cased unless it says."""
    return f.metadata.get("env", (f.name.upper(),))


def from_environment(dataclass_type, environ: Mapping[str, str] = os.environ) -> dict:
    """The fields of a settings dataclass that the environment sets, parsed as the type of their default."""
    values = {}
    for f in fields(dataclass_type):
        name, raw = next(((name, environ[name]) for name in env_names(f) if environ.get(name)), (None, None))
        if name is None:
            continue
        kind = type(f.default)
        try:
            values[f.name] = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r}: not {'an' if kind is int else 'a'} {kind.__name__}") from None
    return values


@functools.cache
def settings() -> Settings:
    """This process's settings: the environment parsed at the first call, the same object after."""
    return Settings.from_env()


def reload() -> Settings:
    """Parse the environment again, for a process that changed it (the tests' fixtures, the local stack).

    A Lambda execution environment keeps its variables for life: no handler calls this.
    """
    settings.cache_clear()
    return settings()


def whatsapp_secret(settings: Settings, name: str | None = None) -> dict:
    """The JSON secret {access_token, app_secret, verify_token} (the stack's, or a number's own
    `name`), cached for five minutes."""
    from aws_lambda_powertools.utilities import parameters

    return parameters.get_secret(name or settings.whatsapp_secret_arn, transform="json", max_age=300)
