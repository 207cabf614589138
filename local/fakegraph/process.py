"""The fake in a process of its own (`python -m local.fakegraph`), with FakeGraph's methods."""

from __future__ import annotations

import subprocess
import sys
import threading

import requests

from .settings import Settings

# What the command line (__main__) prints first, before the URL: start() reads the URL from that line.
LISTENING = "fakegraph listening on "


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
