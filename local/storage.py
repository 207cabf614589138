"""The local stack's stores: dynalite as DynamoDB (`make up`, `make demo`), moto's server as Secrets
Manager (and as DynamoDB for the tests), and the table made from template.yaml."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests
from botocore.config import Config as BotoConfig

from .moto_server import COUNTS_PATH, RESET_PATH
from .template import load_template, table_definition

log = logging.getLogger(__name__)

SECRET_NAME = "whatsapp-local"
# dynalite, installed from local/package.json (pinned in local/package-lock.json) by `make up` and `make demo`.
DYNALITE_CLI = Path(__file__).resolve().parent / "node_modules" / "dynalite" / "cli.js"
# dynalite with its expressions parsed once per shape (local/dynalite.js); DYNALITE_CLI is stock dynalite.
DYNALITE_SERVER = Path(__file__).resolve().parent / "dynalite.js"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class StoreUsage:
    """What the local store did: calls answered and CPU seconds spent on them, by operation, the
    CPU seconds of its whole process, and when the server counted (epoch seconds; of a
    difference, the later count's)."""

    calls: Counter
    cpu_seconds: Counter
    process_cpu_seconds: float
    taken_at: float

    def __sub__(self, earlier: StoreUsage) -> StoreUsage:
        return StoreUsage(self.calls - earlier.calls, self.cpu_seconds - earlier.cpu_seconds,
                          self.process_cpu_seconds - earlier.process_cpu_seconds, self.taken_at)


class MotoServer:
    """moto's server in its own process (its own GIL), on 127.0.0.1 only."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> MotoServer:
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} is in use: set another port for the local DynamoDB")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("moto server exited at start")
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)  # waiting for another process to bind its port: nothing to wait on
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout}s")

    @property
    def pid(self) -> int:
        return self._process.pid

    def usage(self) -> StoreUsage:
        """The calls the server has answered so far, and its CPU time on them, by operation
        (local/moto_server.py counts them)."""
        answer = requests.get(f"{self.url}{COUNTS_PATH}", timeout=10).json()
        return StoreUsage(Counter(answer["calls"]), Counter(answer["cpu_seconds"]), answer["process_cpu_seconds"],
                          answer["taken_at"])

    def reset(self) -> None:
        requests.post(f"{self.url}{RESET_PATH}", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class DynaliteServer:
    """dynalite (DynamoDB's API on LevelDB, in Node.js) in its own process, on 127.0.0.1 only.

    With `data_dir` its LevelDB lives in that folder and outlives the process (a restarted `make up`
    finds its campaigns); without, it is held in memory. Tables become ACTIVE at once.
    """

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None, stock: bool = False):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(data_dir) if data_dir else None
        self.script = DYNALITE_CLI if stock else DYNALITE_SERVER
        self._process: subprocess.Popen | None = None

    @staticmethod
    def missing() -> str | None:
        """Why dynalite cannot start here, in one line; None when it can."""
        if not shutil.which("node"):
            return "Node.js (`node`) is not on PATH: the local DynamoDB (dynalite) runs on it"
        if not DYNALITE_CLI.is_file():
            return "dynalite is not installed: run `make up` (it runs `npm ci` in local/)"
        return None

    def start(self, timeout: float = 30.0) -> DynaliteServer:
        reason = self.missing()
        if reason:
            raise RuntimeError(reason)
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} is in use: set another port for the local DynamoDB")
        command = [shutil.which("node"), str(self.script), "--host", "127.0.0.1", "--port", str(self.port),
                   "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
        if self.data_dir:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            command += ["--path", str(self.data_dir)]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - its stderr until stop(); read by log()
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the local DynamoDB (dynalite) exited at start: {self._exit_reason()}")
            if port_in_use(self.port):
                # It opens its folder at the first call: one now, so that a folder another stack holds
                # is found here, not by the first sender.
                try:
                    boto3.client("dynamodb", endpoint_url=self.url, region_name="us-east-1",
                                 aws_access_key_id="local", aws_secret_access_key="local",
                                 config=BotoConfig(retries={"total_max_attempts": 1}, read_timeout=timeout)
                                 ).list_tables(Limit=1)
                    return self
                except Exception:
                    try:
                        self._process.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        self._process.kill()
                    raise RuntimeError(f"the local DynamoDB (dynalite) failed at start: {self._exit_reason()}") from None
            time.sleep(0.05)  # waiting for another process to bind its port: nothing to wait on
        raise RuntimeError(f"dynalite did not answer on {self.url} within {timeout}s")

    def log(self) -> str:
        """What the server wrote on stderr so far (nothing, unless something failed)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _exit_reason(self) -> str:
        lines = self.log().strip().splitlines()
        why = next((line.strip() for line in lines if "Error:" in line), lines[-1] if lines else "no message")
        if self.data_dir and any("LEVEL_DATABASE_NOT_OPEN" in line or "LOCK" in line for line in lines):
            # LevelDB's lock: the folder is open in another process (which LevelDB does not name)
            why = f"its folder {self.data_dir} is in use by another process (is `make up` running already?)"
        return why

    @property
    def pid(self) -> int:
        return self._process.pid

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()  # dynalite closes its LevelDB on SIGTERM
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._process and self._process.returncode not in (0, -signal.SIGTERM, None):
            log.warning("the local DynamoDB (dynalite) had exited %s: %s", self._process.returncode, self.log()[-3000:])
        if self._process:
            self._stderr.close()

    def __enter__(self) -> DynaliteServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def aws_env(endpoint_url: str, table_name: str, region: str = "us-east-1") -> dict[str, str]:
    """The environment that points boto3 and pynamodb at the local server (fake credentials)."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "TABLE_NAME": table_name,
    }


def create_table(endpoint_url: str, table_name: str, region: str = "us-east-1", keep_existing: bool = False) -> bool:
    """The table from template.yaml; with `keep_existing`, a table of that name already in the store (a
    restarted `make up`) is kept as it is. True if the table was created."""
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region,
                          aws_access_key_id="local", aws_secret_access_key="local")
    try:
        client.create_table(**table_definition(load_template(), table_name))
    except client.exceptions.ResourceInUseException:
        if not keep_existing:
            raise
        return False
    return True


def create_secret(endpoint_url: str, values: dict, region: str = "us-east-1", name: str = SECRET_NAME) -> str:
    """Store the WhatsApp secret in the local Secrets Manager; returns its ARN."""
    client = boto3.client("secretsmanager", endpoint_url=endpoint_url, region_name=region,
                          aws_access_key_id="local", aws_secret_access_key="local")
    return client.create_secret(Name=name, SecretString=json.dumps(values))["ARN"]


def apply_env(env: dict[str, str]) -> None:
    os.environ.update(env)
