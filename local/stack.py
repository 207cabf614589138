"""The local stack: dynalite as DynamoDB (moto's server for the tests), moto's server as Secrets
Manager, the fake Graph API, the local Lambda runtime running the template's functions as OS
processes, and the recovery schedule.

The functions are the very handlers of functions/*/app.py with the very same domain package;
only the edges differ: endpoint URLs in the environment, and how a function is invoked.
Tests, `make up`, the demo and the benchmarks all build on this one composition.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from campaigns import config
from campaigns.config import from_environment

from .fakegraph import FakeGraph
from .runtime import LambdaRuntime, functions_from_template
from .scheduler import Scheduler
from .storage import DynaliteServer, MotoServer, aws_env, create_secret, create_table, free_port
from .template import load_template

# Logical ids in template.yaml → the names the functions are invoked by locally.
FUNCTION_NAMES = {
    "SenderFunction": "sender",
    "RecoveryFunction": "recovery",
    "ApiFunction": "api",
    "WebhookFunction": "webhook",
}


# The window's ceiling on each local store, unless MAX_IN_FLIGHT says otherwise. On dynalite, which answers
# in about a millisecond, production's 32. On moto, 8: answering in tens of milliseconds when busy, moto
# grows every window to its ceiling, and a window of 32 calls queues the batch's heartbeats behind its
# sends until its lease is no longer usable.
MAX_IN_FLIGHT_BY_STORE = {"dynalite": 32, "moto": 8}


@dataclass
class StackConfig:
    """Timings and ports of the local stack; each is an environment variable of the same name."""

    table_name: str = "campaigns"
    # The local DynamoDB: "dynalite" (local/dynalite.js, on Node.js) or "moto" (local/moto_server.py,
    # which also serves Secrets Manager either way). A stack given a running moto server (the tests)
    # keeps DynamoDB on it.
    local_store: str = "dynalite"
    # The folder dynalite keeps its tables in, so that they outlive the stack (`make up` passes
    # .local-store/dynamodb); empty: in memory, gone at stop (the demo, the benchmarks).
    local_data_dir: str = ""
    # "warm": each function's processes are execution environments that run one invocation after
    # another, as on Lambda (an idle one is reused, a dead one replaced); "cold": one process per
    # invocation, each loading Python, boto3 and the handler anew.
    lambda_environments: str = "warm"
    # The sender's real deadline: each batch process is killed after this long, like Lambda (production
    # gives a batch 900 s). A batch stops claiming a stop margin (connect + read timeout + 2 s) before
    # it and hands the shard to the next batch: two minutes make that once per ~115 s of sending.
    batch_seconds: float = 120.0
    lease_seconds: float = 6.0
    heartbeat_seconds: float = 0.5
    recovery_interval_seconds: float = 3.0
    connect_timeout_seconds: float = 1.0
    read_timeout_seconds: float = 2.0
    clock_skew_seconds: float = 0.5
    # The ceiling of a batch's window of sends in flight (ratelimit.SendWindow sizes it to hold the
    # pace, ~8-12 at 80 mps here); 0: the store's own, MAX_IN_FLIGHT_BY_STORE.
    max_in_flight: int = 0
    max_attempts: int = 5
    in_doubt_grace_seconds: float = 30.0
    # Policy auto's proof of absence (campaigns/config.py): shorter than production's, as the local
    # fake posts its statuses within a second, and so that a stack whose webhooks are off finishes a
    # campaign within a minute of a crash.
    proof_quiet_seconds: float = 3.0
    proof_wait_seconds: float = 60.0
    proof_recheck_seconds: float = 3.0
    # The messaging limit's rolling window (Meta's day); a test shortens it to see room free up.
    messaging_window_seconds: float = 86400.0
    backoff_base_seconds: float = 0.2
    backoff_cap_seconds: float = 5.0
    dynamodb_port: int = 0  # the local DynamoDB's; 0 picks a free port
    graph_port: int = 0
    lambda_port: int = 0
    # A Graph API to use instead of the fake (GRAPH_API_URL), and its token and phone number id.
    graph_api_url: str = ""
    whatsapp_token: str = ""
    # The app secret that signs status webhooks and the token of Meta's subscription check: a real
    # app's, so that its webhooks (or any signing fake's) are verified here; random when unset.
    whatsapp_app_secret: str = ""
    whatsapp_verify_token: str = ""
    phone_number_id: str = "1234567890"
    fake_latency_ms: float = 50.0
    fake_latency_jitter: float = 0.2
    # The HTTP API (local/gateway.py) when the stack runs with_gateway; 0 picks a free port.
    api_port: int = 3000
    # Share of accepted sends whose status webhooks from the fake end in `failed` instead of read.
    fake_webhook_failed_ratio: float = 0.02
    # Makes every function's draws (backoff jitter) and the fake's repeat from run to run: 0 leaves them free.
    random_seed: int = 0

    def __post_init__(self):
        if self.local_store not in ("dynalite", "moto"):
            raise ValueError(f"LOCAL_STORE={self.local_store!r}: it is 'dynalite' or 'moto'")
        if self.lambda_environments not in ("warm", "cold"):
            raise ValueError(f"LAMBDA_ENVIRONMENTS={self.lambda_environments!r}: it is 'warm' or 'cold'")

    @classmethod
    def from_env(cls, **overrides) -> StackConfig:
        return cls(**{**from_environment(cls), **overrides})


@dataclass
class LocalStack:
    config: StackConfig = field(default_factory=StackConfig)
    # An already running moto server to use for DynamoDB and Secrets Manager (tests share one per
    # session); else one is started for Secrets Manager, and DynamoDB is config.local_store.
    moto: MotoServer | None = None
    with_scheduler: bool = True
    log_path: str | None = None
    # Also serve the HTTP API (and /_local/...) on api_port; the fake then posts its status webhooks there.
    with_gateway: bool = False

    def __post_init__(self):
        self._own_moto = self.moto is None
        self.dynalite: DynaliteServer | None = None
        self.dynamodb_url = ""
        self.max_in_flight = 0  # the window's ceiling the functions get, once started
        self.fake: FakeGraph | None = None
        self.runtime: LambdaRuntime | None = None
        self.scheduler: Scheduler | None = None
        self.gateway = None
        # The local Secrets Manager secret, as production's: each value given, or a random one.
        self.secret = {
            "access_token": self.config.whatsapp_token or secrets.token_urlsafe(24),
            "app_secret": self.config.whatsapp_app_secret or secrets.token_urlsafe(24),
            "verify_token": self.config.whatsapp_verify_token or secrets.token_urlsafe(12),
        }
        self.env: dict[str, str] = {}

    def start(self) -> LocalStack:
        cfg = self.config
        on_moto = not self._own_moto or cfg.local_store == "moto"
        if self.moto is None:
            self.moto = MotoServer((cfg.dynamodb_port or None) if on_moto else None).start()
        if not on_moto:
            self.dynalite = DynaliteServer(cfg.dynamodb_port or None, cfg.local_data_dir or None).start()
        self.dynamodb_url = self.moto.url if on_moto else self.dynalite.url
        self.max_in_flight = cfg.max_in_flight or MAX_IN_FLIGHT_BY_STORE["moto" if on_moto else "dynalite"]
        create_table(self.dynamodb_url, cfg.table_name, keep_existing=bool(cfg.local_data_dir))
        secret_arn = create_secret(self.moto.url, self.secret, name=f"whatsapp-{cfg.table_name}")
        graph_url = cfg.graph_api_url
        if not graph_url:
            self.fake = FakeGraph(
                port=cfg.graph_port,
                token=self.secret["access_token"],
                latency_ms=cfg.fake_latency_ms,
                latency_jitter=cfg.fake_latency_jitter,
                app_secret=self.secret["app_secret"],
                seed=cfg.random_seed or None,
            ).start()
            graph_url = self.fake.url
        lambda_port = cfg.lambda_port or free_port()
        self.env = self._function_env(secret_arn, graph_url, f"http://127.0.0.1:{lambda_port}")
        # This process is a client too (the API calls service code in-process in tests), and its
        # settings() are this stack's from here on.
        os.environ.update(self.env)
        config.reload()
        functions = functions_from_template(
            load_template(),
            FUNCTION_NAMES,
            timeouts={"sender": cfg.batch_seconds, "recovery": 60.0, "api": 30.0, "webhook": 10.0},
            env=self.env,
        )
        # One loaded environment kept ready for each function the runtime invokes (senders and recovery;
        # the gateway runs the API and webhook handlers itself): no batch and no recovery tick waits
        # for a Python process to start.
        self.runtime = LambdaRuntime(functions, port=lambda_port, log_path=self.log_path,
                                     warm=cfg.lambda_environments == "warm",
                                     spares={"sender": 1, "recovery": 1}).start()
        # Without the periodic schedule, a caller can still tick recovery by hand: scheduler.tick().
        self.scheduler = Scheduler(self.runtime.url, "recovery", cfg.recovery_interval_seconds)
        if self.with_scheduler:
            self.scheduler.start()
        if self.with_gateway:
            self.start_gateway()
        return self

    def start_gateway(self, **options):
        """The API on 127.0.0.1:api_port (local/gateway.py); the fake's status webhooks go to its /webhook."""
        from .gateway import Gateway

        self.gateway = Gateway(runtime=self.runtime, port=self.config.api_port, **options).start()
        if self.fake:
            self.fake.configure(webhook_url=f"{self.gateway.url}/webhook",
                                webhook_failed_ratio=self.config.fake_webhook_failed_ratio)
        return self.gateway

    def _function_env(self, secret_arn: str, graph_url: str, lambda_url: str) -> dict[str, str]:
        cfg = self.config
        env = aws_env(self.moto.url, cfg.table_name)
        env.update(
            {
                "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_url,
                "AWS_ENDPOINT_URL_LAMBDA": lambda_url,
                "WHATSAPP_SECRET_ARN": secret_arn,
                "GRAPH_API_URL": graph_url,
                "SENDER_FUNCTION_NAME": "sender",
                "LEASE_SECONDS": str(cfg.lease_seconds),
                "HEARTBEAT_SECONDS": str(cfg.heartbeat_seconds),
                "CONNECT_TIMEOUT_SECONDS": str(cfg.connect_timeout_seconds),
                "READ_TIMEOUT_SECONDS": str(cfg.read_timeout_seconds),
                "CLOCK_SKEW_SECONDS": str(cfg.clock_skew_seconds),
                "MAX_IN_FLIGHT": str(self.max_in_flight),
                "MAX_ATTEMPTS": str(cfg.max_attempts),
                "IN_DOUBT_GRACE_SECONDS": str(cfg.in_doubt_grace_seconds),
                "PROOF_QUIET_SECONDS": str(cfg.proof_quiet_seconds),
                "PROOF_WAIT_SECONDS": str(cfg.proof_wait_seconds),
                "PROOF_RECHECK_SECONDS": str(cfg.proof_recheck_seconds),
                "MESSAGING_WINDOW_SECONDS": str(cfg.messaging_window_seconds),
                "SECRET_PREFIX": f"{cfg.table_name}/",  # the local stack's name, as a deployed stack's
                "BACKOFF_BASE_SECONDS": str(cfg.backoff_base_seconds),
                "BACKOFF_CAP_SECONDS": str(cfg.backoff_cap_seconds),
                "POWERTOOLS_SERVICE_NAME": "campaigns-local",
                "POWERTOOLS_METRICS_NAMESPACE": "WhatsAppCampaigns",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                "PHONE_NUMBER_ID": cfg.phone_number_id,
            }
        )
        if cfg.random_seed:
            env["LOCAL_RANDOM_SEED"] = str(cfg.random_seed)
        return env

    def stop(self) -> None:
        if self.gateway:
            self.gateway.stop()
        if self.scheduler:
            self.scheduler.stop()
        if self.runtime:
            self.runtime.stop()
        if self.fake:
            self.fake.stop()
        if self.dynalite:
            self.dynalite.stop()
        if self._own_moto and self.moto:
            self.moto.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
