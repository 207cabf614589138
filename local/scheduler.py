"""The local stand-in for EventBridge Scheduler: invokes the recovery function on a fixed interval."""

from __future__ import annotations

import json
import threading

import boto3


class Scheduler:
    """Every `interval` seconds, an asynchronous invoke of `function_name` with `{"action": "tick"}`.

    It goes through the local runtime's Invoke API, so recovery runs in its own process just
    as a scheduled invocation does on AWS.
    """

    def __init__(self, lambda_endpoint: str, function_name: str, interval: float):
        self.interval = interval
        self.function_name = function_name
        self.ticks = 0
        self._client = boto3.client(
            "lambda", endpoint_url=lambda_endpoint, region_name="us-east-1",
            aws_access_key_id="local", aws_secret_access_key="local",
        )
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self) -> None:
        self._client.invoke(
            FunctionName=self.function_name, InvocationType="Event", Payload=json.dumps({"action": "tick"})
        )
        self.ticks += 1

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.tick()

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
