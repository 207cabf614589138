"""`make up`: the whole local stack in the foreground, until Ctrl-C or SIGTERM.

dynalite as DynamoDB (the table from template.yaml, kept on disk in .local-store/ so that a restart finds
its campaigns; `make reset` empties it), moto as Secrets Manager, the fake Graph API (unless
GRAPH_API_URL names another one: then WHATSAPP_TOKEN and PHONE_NUMBER_ID configure the client; the webhook
verifies WHATSAPP_APP_SECRET's signatures and WHATSAPP_VERIFY_TOKEN's handshake, when set), the local
Lambda runtime (every invocation an OS process), the recovery schedule every RECOVERY_INTERVAL_SECONDS,
and the gateway with the HTTP API and the dashboard on http://127.0.0.1:3000 (API_PORT). Every timing and
port comes from the environment: each StackConfig field, upper-cased (see docs/local.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path

# Where `make up` keeps its tables between runs (git-ignored; `make reset` removes it).
DATA_DIR = Path(__file__).resolve().parent.parent / ".local-store" / "dynamodb"

REQUIRED_MODULES = ("boto3", "moto", "pynamodb", "requests", "aws_lambda_powertools", "yaml", "pydantic")


def missing_dependency() -> str | None:
    """The first Python package the stack needs that is not installed."""
    for module in REQUIRED_MODULES:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def check_ports(config) -> str | None:
    """A one-line reason when a fixed port of the stack is taken already."""
    from local.storage import port_in_use

    for name in ("api_port", "dynamodb_port", "graph_port", "lambda_port"):
        port = getattr(config, name)
        if port and port_in_use(port):
            hint = " (is `make up` running already?)" if name == "api_port" else ""
            return f"port {port} on 127.0.0.1 is already in use{hint}: set {name.upper()} to another port"
    return None


def describe(stack) -> list[str]:
    cfg = stack.config
    api = stack.gateway.url
    store = "moto" if stack.dynalite is None else (
        f"dynalite, kept in {cfg.local_data_dir}" if cfg.local_data_dir else "dynalite, in memory")
    if stack.fake:
        graph = f"{stack.fake.url}   (fake: latency ~{cfg.fake_latency_ms:g}ms, signed status webhooks to {api}/webhook)"
    else:
        graph = f"{cfg.graph_api_url}   (phone number id {cfg.phone_number_id})"
    secret = "WHATSAPP_APP_SECRET" if cfg.whatsapp_app_secret else "generated"
    token = "WHATSAPP_VERIFY_TOKEN" if cfg.whatsapp_verify_token else "generated"
    webhook = f"{api}/webhook   (app secret: {secret}; verify token: {token})"
    return [
        "local stack running:",
        f"  HTTP API     {api}   (curl {api}/campaigns; OpenAPI at {api}/openapi.json)",
        f"  webhook      {webhook}",
        f"  dashboard    {api}/_local/dashboard",
        f"  invocations  {api}/_local/invocations",
        f"  DynamoDB     {stack.dynamodb_url}   ({store}; table {cfg.table_name!r})",
        f"  Secrets      {stack.moto.url}   (Secrets Manager, moto: the WhatsApp secret whatsapp-{cfg.table_name})",
        f"  Graph API    {graph}",
        f"  Lambda       {stack.runtime.url}   ({'warm execution environments, a spare kept loaded' if cfg.lambda_environments == 'warm' else 'a new OS process per invocation'}; sender deadline "
        f"{cfg.batch_seconds:g}s)",
        f"  recovery     every {cfg.recovery_interval_seconds:g}s (lease {cfg.lease_seconds:g}s)",
        f"  logs         {stack.log_path}   (the functions' processes)",
        "CLI: python -m campaignctl --help   ·   Ctrl-C stops everything",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.up", description=__doc__.splitlines()[0])
    parser.add_argument("--access-log", action="store_true", help="print one line per HTTP request")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    missing = missing_dependency()
    if missing:
        print(f"up: the Python package {missing!r} is missing: run `make venv` (or make up, which does)",
              file=sys.stderr)
        return 2
    from local.stack import LocalStack, StackConfig

    try:
        config = StackConfig.from_env(**({} if os.environ.get("LOCAL_DATA_DIR") else {"local_data_dir": str(DATA_DIR)}))
    except (TypeError, ValueError) as error:
        print(f"up: bad setting in the environment: {error}", file=sys.stderr)
        return 2
    if config.graph_api_url and not config.whatsapp_token:
        print("up: GRAPH_API_URL is set: set WHATSAPP_TOKEN (and PHONE_NUMBER_ID) for it too", file=sys.stderr)
        return 2
    if config.local_store == "dynalite":
        from local.storage import DynaliteServer

        missing_store = DynaliteServer.missing()
        if missing_store:
            print(f"up: {missing_store}", file=sys.stderr)
            return 2
    busy = check_ports(config)
    if busy:
        print(f"up: {busy}", file=sys.stderr)
        return 2

    log_path = os.environ.get("FUNCTION_LOG") or os.path.join(tempfile.gettempdir(), "campaigns-local-functions.log")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stack = LocalStack(config, log_path=log_path)
    try:
        stack.start()
        from local.gateway import GatewayError

        try:
            stack.start_gateway(access_log=args.access_log)
        except GatewayError as error:
            print(f"up: {error}", file=sys.stderr)
            return 2
        print("\n".join(describe(stack)), flush=True)
        while not stop.wait(1.0):
            pass  # a timed wait keeps the main thread responsive to signals
        print("stopping…", file=sys.stderr, flush=True)
        return 0
    except RuntimeError as error:
        print(f"up: {error}", file=sys.stderr)
        return 2
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
