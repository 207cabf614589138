"""A local Lambda runtime: every invocation is a real OS process with a real deadline.

`LambdaRuntime` serves the part of the Lambda Invoke REST API that boto3 uses
(`POST /2015-03-31/functions/{FunctionName}/invocations`), so product code calls
`boto3.client("lambda", endpoint_url=runtime.url).invoke(...)` unchanged:

- `InvocationType: RequestResponse` runs the handler and answers with its result
  (errors as Lambda reports them: 200 with `X-Amz-Function-Error: Unhandled`).
- `InvocationType: Event` answers 202 at once and queues the invocation; a pool of
  worker threads runs the queue, at most `max_concurrency` children at a time.

Each invocation is `python -m local.lambda_process <file> <attr>` in its own process
(its own session, so a kill takes anything it started with it). With `warm=True`
(the local stack), a process is an execution environment, as on Lambda: it loads the
handler once and runs one invocation after another (`--serve`), and an invocation
takes an idle environment of its function or starts a new one; an environment that
dies, is killed or times out is gone, and the next invocation starts another. The
parent waits until the deadline and then SIGKILLs the child, like Lambda's timeout. So a crash
in a test or benchmark is a real process death, seen exactly as Lambda would see it:
an async invocation that errors, times out or is killed (by the deadline or by
anybody else) is a failure, and the function's on-failure destination receives
Lambda's destination record. There are no platform retries: the project sets
`MaximumRetryAttempts: 0`, and the runtime does not retry either.

Introspection for tests and tools: `invocations()` (live children with their pids,
also `GET /_local/invocations`), `history()` (finished ones, also
`GET /_local/history`), `wait_idle()` and `wait_for()`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlsplit

from local import template as sam

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYER_PATH = REPO_ROOT / "layers" / "common" / "python"
REGION = "us-east-1"
ACCOUNT_ID = "000000000000"

# Signal names as Lambda reports them ("Runtime exited with error: signal: killed").
_SIGNAL_WORDS = {
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGINT: "interrupt",
    signal.SIGBUS: "bus error",
}

T = TypeVar("T")


@dataclass
class LocalFunction:
    """A function the runtime can invoke, under the name clients use in FunctionName."""

    name: str
    handler_path: str | Path
    handler_attr: str = "lambda_handler"
    # The real deadline: the child is SIGKILLed this long after it was started.
    timeout_seconds: float = 3.0
    # Name of another LocalFunction that receives the on-failure destination record.
    on_failure: str | None = None
    # Extra environment variables for this function's processes.
    env: dict[str, str] = field(default_factory=dict)
    memory_mb: int = 128

    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}"


def functions_from_template(
    template: dict,
    names: dict[str, str],
    timeouts: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    base_dir: str | Path = REPO_ROOT,
) -> dict[str, LocalFunction]:
    """LocalFunctions for the template's functions listed in `names` (logical id → function name).

    `timeouts` (function name → seconds) overrides the template's Timeout, e.g. to
    make crash tests fast; `env` is given to every function. An on-failure
    destination must point at a function that is in `names` too.
    """
    specs = sam.functions(template)
    unknown = set(names) - set(specs)
    if unknown:
        raise ValueError(f"not functions of the template: {sorted(unknown)}")
    timeouts = timeouts or {}
    local_functions = {}
    for logical_id, name in names.items():
        spec = specs[logical_id]
        if spec.on_failure is not None and spec.on_failure not in names:
            raise ValueError(f"{logical_id} sends failures to {spec.on_failure}, which is not in names")
        local_functions[name] = LocalFunction(
            name=name,
            handler_path=Path(base_dir) / spec.handler_path,
            handler_attr=spec.handler_attr,
            timeout_seconds=timeouts.get(name, spec.timeout_seconds),
            on_failure=names[spec.on_failure] if spec.on_failure else None,
            env=dict(env or {}),
            memory_mb=spec.memory_mb,
        )
    return local_functions


def function_name_from(function_name_or_arn: str) -> str:
    """`sender`, `sender:$LATEST`, `123456789012:function:sender` or a full ARN → `sender`."""
    parts = function_name_or_arn.split(":")
    if "function" in parts[:-1]:
        return parts[parts.index("function") + 1]
    return parts[0]


@dataclass
class Invocation:
    """One invocation, from queued to finished."""

    id: str
    function: str
    event: Any
    is_async: bool
    pid: int | None = None
    process: subprocess.Popen | None = None
    started_at: float | None = None
    deadline: float | None = None
    # The same deadline on the monotonic clock, which the parent waits on.
    deadline_monotonic: float | None = None
    number: int = 0  # invocations made before this one by the runtime: its draws' seed (LOCAL_RANDOM_SEED)

    def describe(self, with_event: bool = True) -> dict:
        description = {
            "id": self.id,
            "function": self.function,
            "pid": self.pid,
            "started_at": self.started_at,
            "deadline": self.deadline,
        }
        if with_event:
            description["event"] = self.event
        return description


@dataclass
class Outcome:
    """How a child ended, in Lambda's terms."""

    kind: str  # "ok" | "error" | "timeout" | "killed"
    exit_code: int | None
    result: Any = None
    error: dict | None = None

    @property
    def failed(self) -> bool:
        return self.kind != "ok"


class LambdaRuntime:
    """Runs LocalFunctions as Lambda does, one OS process per invocation, behind the Invoke API."""

    def __init__(
        self,
        functions: dict[str, LocalFunction],
        host: str = "127.0.0.1",
        port: int = 0,
        env: dict[str, str] | None = None,
        max_concurrency: int = 32,
        log_path: str | Path | None = None,
        history_limit: int = 100_000,
        warm: bool = False,
        max_idle_per_function: int = 4,
        spares: dict[str, int] | None = None,
    ):
        for key, function in functions.items():
            if key != function.name:
                raise ValueError(f"functions must be keyed by their name: {key!r} holds {function.name!r}")
        for function in functions.values():
            if function.on_failure is not None and function.on_failure not in functions:
                raise ValueError(
                    f"{function.name}: on-failure target {function.on_failure!r} is not a function"
                )
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.functions = dict(functions)
        self._address = (host, port)
        self._env = dict(env or {})
        self._max_concurrency = max_concurrency
        self._log_path = Path(log_path) if log_path else None
        self._warm = warm
        self._max_idle = max_idle_per_function
        self._idle: dict[str, list[_Environment]] = {}  # warm environments waiting for an invocation
        # Warm only: how many idle environments to keep ready per function, started ahead of need (at
        # start, and whenever an invocation takes one), so that an invocation never waits for Python,
        # boto3 and the handler to load. Like provisioned concurrency, without its bill.
        self._spares = dict(spares or {}) if warm else {}
        unknown = set(self._spares) - set(self.functions)
        if unknown:
            raise ValueError(f"spares for functions that do not exist: {sorted(unknown)}")

        # One lock guards all state below; two conditions on it: workers wait for
        # work, observers (wait_idle, wait_for, stop) wait for any change.
        self._lock = threading.RLock()
        self._work_available = threading.Condition(self._lock)
        self._changed = threading.Condition(self._lock)
        self._queue: deque[Invocation] = deque()
        self._numbers = itertools.count()
        self._live: dict[str, Invocation] = {}
        self._history: deque[dict] = deque(maxlen=history_limit)
        # Invocations taken off the queue (or started synchronously) and not yet finished.
        # Counted from before the child exists until after its on-failure record is
        # queued, so "queue empty and nothing in progress" really means idle.
        self._in_progress = 0
        self._stopping = False

        self._server: _InvokeServer | None = None
        self._server_thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._log_file: IO[bytes] | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> LambdaRuntime:
        if self._server is not None:
            raise RuntimeError("runtime already started")
        if self._log_path:
            self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - lives until stop()
        self._server = _InvokeServer(self._address, self)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="lambda-api", daemon=True
        )
        self._server_thread.start()
        self._workers = [
            threading.Thread(target=self._work, name=f"lambda-worker-{n}", daemon=True)
            for n in range(self._max_concurrency)
        ]
        for worker in self._workers:
            worker.start()
        for name, count in self._spares.items():
            for _ in range(count):
                self._add_spare(self.functions[name])
        log.info("local Lambda runtime on %s with %s", self.url, ", ".join(self.functions))
        return self

    def stop(self) -> None:
        """Stop serving, drop queued invocations and SIGKILL every live child."""
        with self._lock:
            if self._server is None or self._stopping:
                return
            self._stopping = True
            dropped = len(self._queue)
            self._queue.clear()
            live = list(self._live.values())
            idle = [environment for environments in self._idle.values() for environment in environments]
            self._idle.clear()
            self._work_available.notify_all()
            self._changed.notify_all()
        if dropped:
            log.warning("dropped %d queued invocations at stop", dropped)
        for invocation in live:
            _kill(invocation.process)
        for environment in idle:
            _kill(environment.process)
        self._server.shutdown()
        self._server.server_close()
        self._server_thread.join()
        for worker in self._workers:
            worker.join()
        # Synchronous invocations run on the HTTP server's request threads: wait for them too.
        with self._changed:
            self._changed.wait_for(lambda: self._in_progress == 0, timeout=10)
        if self._log_file:
            self._log_file.close()

    def __enter__(self) -> LambdaRuntime:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("runtime not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- invoking ----------------------------------------------------------------

    def invoke_async(self, function_name: str, event: Any) -> str:
        """Queue an invocation (InvocationType Event); returns its request id."""
        invocation = self._new_invocation(function_name, event, is_async=True)
        with self._lock:
            if self._stopping:
                raise RuntimeError("runtime is stopping")
            self._enqueue_locked(invocation)
        return invocation.id

    def invoke(self, function_name: str, event: Any) -> dict:
        """Run an invocation now (InvocationType RequestResponse); returns its history entry."""
        invocation = self._new_invocation(function_name, event, is_async=False)
        with self._lock:
            if self._stopping:
                raise RuntimeError("runtime is stopping")
            self._in_progress += 1
        return self._execute(invocation)

    def _new_invocation(self, function_name: str, event: Any, is_async: bool) -> Invocation:
        if function_name not in self.functions:
            raise KeyError(function_name)
        number = next(self._numbers)
        return Invocation(id=str(uuid.uuid4()), function=function_name, event=event, is_async=is_async,
                          number=number)

    def _enqueue_locked(self, invocation: Invocation) -> None:
        self._queue.append(invocation)
        self._work_available.notify()
        self._changed.notify_all()

    def _work(self) -> None:
        """A worker thread: run queued invocations one at a time until stop."""
        while True:
            with self._work_available:
                self._work_available.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                invocation = self._queue.popleft()
                self._in_progress += 1
            self._execute(invocation)

    def _execute(self, invocation: Invocation) -> dict:
        """Run one invocation in a child process; record how it ended. Never raises."""
        function = self.functions[invocation.function]
        if self._warm:
            return self._execute_warm(invocation, function)
        process = None
        try:
            process = self._spawn(function, invocation)
            self._register_live(invocation, process)
            stdout, timed_out = _wait_until_deadline(process, invocation)
            outcome = _outcome_of(invocation, function, process.returncode, stdout, timed_out)
        except Exception as exc:
            # A failure of the runtime itself must neither leak a child nor leave the
            # invocation counted as in progress (wait_idle would never return).
            log.exception("%s %s: the local runtime failed", invocation.function, invocation.id)
            exit_code = None
            if process is not None:
                _kill(process)
                exit_code = process.wait()
            error = {"errorType": "Runtime.Unknown", "errorMessage": f"{type(exc).__name__}: {exc}"}
            outcome = Outcome("error", exit_code, error=error)
        return self._finish(invocation, outcome)

    def _execute_warm(self, invocation: Invocation, function: LocalFunction) -> dict:
        """Run one invocation in a warm environment of its function (an idle one, else a new one)."""
        environment = None
        try:
            environment = self._take_environment(function, invocation)
            self._register_live(invocation, environment.process)
            answer, timed_out = environment.call(invocation, self._invocation_env(function, invocation))
            if answer is not None:
                outcome = _outcome_of_answer(answer)
                self._give_back(function, environment)
            else:  # the environment ended (a crash, a kill) or the deadline killed it: it is gone
                if timed_out:
                    _kill(environment.process)
                outcome = _outcome_of(invocation, function, environment.process.wait(), b"", timed_out)
        except Exception as exc:
            log.exception("%s %s: the local runtime failed", invocation.function, invocation.id)
            exit_code = None
            if environment is not None:
                _kill(environment.process)
                exit_code = environment.process.wait()
            error = {"errorType": "Runtime.Unknown", "errorMessage": f"{type(exc).__name__}: {exc}"}
            outcome = Outcome("error", exit_code, error=error)
        return self._finish(invocation, outcome)

    def _take_environment(self, function: LocalFunction, invocation: Invocation) -> _Environment:
        _start_clock(invocation, function)
        taken = None
        with self._lock:
            idle = self._idle.setdefault(function.name, [])
            while idle and taken is None:
                environment = idle.pop()  # the most recently used: the warmest
                if environment.process.poll() is None:
                    taken = environment
            short = self._spares.get(function.name, 0) - len(idle)
        for _ in range(short):
            self._add_spare(function)
        return taken or _Environment(self._spawn(function, invocation, serve=True))

    def _invocation_env(self, function: LocalFunction, invocation: Invocation) -> dict[str, str]:
        """The variables of a process's environment that belong to one invocation: a warm environment
        sets them before each (its other variables are the function's, set when it started)."""
        env = self._child_env(function, invocation)
        return {name: env[name] for name in PER_INVOCATION_ENV if name in env}

    def _add_spare(self, function: LocalFunction) -> None:
        """Start an environment that waits, loaded, for the function's next invocation."""
        placeholder = self._new_invocation(function.name, None, is_async=True)
        _start_clock(placeholder, function)
        environment = _Environment(self._spawn(function, placeholder, serve=True))
        with self._lock:
            if not self._stopping:
                self._idle.setdefault(function.name, []).insert(0, environment)  # taken after warmer ones
                self._changed.notify_all()
                return
        _kill(environment.process)

    def _give_back(self, function: LocalFunction, environment: _Environment) -> None:
        with self._lock:
            idle = self._idle.setdefault(function.name, [])
            if not self._stopping and len(idle) < self._max_idle:
                idle.append(environment)
                return
        environment.close()

    def _spawn(self, function: LocalFunction, invocation: Invocation, serve: bool = False) -> subprocess.Popen:
        if not serve:
            _start_clock(invocation, function)
        handler_path = Path(function.handler_path)
        if not handler_path.is_absolute():
            handler_path = REPO_ROOT / handler_path
        process = subprocess.Popen(
            [sys.executable, "-m", "local.lambda_process", *(["--serve"] if serve else []), str(handler_path),
             function.handler_attr],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,  # None: the runtime's own stderr
            cwd=REPO_ROOT,
            env=self._child_env(function, invocation),
            # Its own session: a kill takes the handler's own children with it, and a
            # Ctrl-C at the terminal reaches the runtime, which then kills children itself.
            start_new_session=True,
        )
        return process

    def _child_env(self, function: LocalFunction, invocation: Invocation) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AWS_REGION", REGION)
        env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
        # A function that invokes another one (self-continuation) reaches this runtime.
        env["AWS_ENDPOINT_URL_LAMBDA"] = self.url
        env.update(self._env)
        env.update(function.env)
        if env.get("LOCAL_RANDOM_SEED"):
            env["LOCAL_RANDOM_SEED"] = f"{env['LOCAL_RANDOM_SEED']}:{invocation.number}"
        python_path = [str(LAYER_PATH), str(REPO_ROOT)]
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        stream_date = datetime.fromtimestamp(invocation.started_at, UTC).strftime("%Y/%m/%d")
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(python_path),
                "PYTHONUNBUFFERED": "1",
                "LAMBDA_RUNTIME_PID": str(os.getpid()),
                "LAMBDA_REQUEST_ID": invocation.id,
                "LAMBDA_DEADLINE_MS": str(int(invocation.deadline * 1000)),
                "LAMBDA_INVOKED_FUNCTION_ARN": function.arn(),
                "AWS_LAMBDA_FUNCTION_NAME": function.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout_seconds),
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"{stream_date}/[$LATEST]{invocation.id.replace('-', '')}",
            }
        )
        return env

    def _register_live(self, invocation: Invocation, process: subprocess.Popen) -> None:
        with self._lock:
            invocation.process = process
            invocation.pid = process.pid
            self._live[invocation.id] = invocation
            stopping = self._stopping
            self._changed.notify_all()
        if stopping:
            # stop() already killed the children it saw; this one started just after.
            _kill(process)

    def _finish(self, invocation: Invocation, outcome: Outcome) -> dict:
        entry = {
            **invocation.describe(),
            "exit_code": outcome.exit_code,
            "outcome": outcome.kind,
            "ended_at": time.time(),
            "result": outcome.result,
            "error": outcome.error,
        }
        function = self.functions[invocation.function]
        with self._lock:
            self._live.pop(invocation.id, None)
            self._history.append(entry)
            # Queued before this invocation stops counting as in progress, so that
            # wait_idle() never sees a moment between the failure and its record.
            if invocation.is_async and outcome.failed and function.on_failure and not self._stopping:
                record = _on_failure_record(invocation, function, outcome)
                self._enqueue_locked(self._new_invocation(function.on_failure, record, is_async=True))
            self._in_progress -= 1
            self._changed.notify_all()
        if outcome.failed:
            log.info("%s %s %s: %s", invocation.function, invocation.id, outcome.kind, outcome.error)
        return entry

    # --- introspection -----------------------------------------------------------

    def invocations(self) -> list[dict]:
        """Live invocations (their child process exists): id, function, pid, started_at, deadline, event."""
        with self._lock:
            return [invocation.describe() for invocation in self._live.values()]

    def history(self) -> list[dict]:
        """Finished invocations, oldest first: id, function, pid, exit_code, outcome, result, error, times."""
        with self._lock:
            return list(self._history)

    def idle_environments(self) -> dict[str, list[int]]:
        """Warm only: the pids of each function's idle environments, the next to be taken last."""
        with self._lock:
            return {name: [environment.process.pid for environment in environments]
                    for name, environments in self._idle.items()}

    def queued(self) -> int:
        """Async invocations waiting for a free worker."""
        with self._lock:
            return len(self._queue)

    def wait_for(self, predicate: Callable[[], T], timeout: float) -> T:
        """Wait until predicate() is truthy; returns its last value (falsy on timeout).

        The predicate is re-evaluated whenever the runtime's state changes (an
        invocation queued, started or finished), so it should look at that state,
        e.g. `lambda: [h for h in runtime.history() if h["function"] == "recovery"]`.
        """
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued and no invocation is running; False on timeout."""
        return self.wait_for(lambda: not self._queue and self._in_progress == 0, timeout)


# --- running one child -------------------------------------------------------------


# What _child_env gives a process that differs from one invocation to the next: a warm environment
# (one process, many invocations) is handed these with each invocation. None is a variable of
# campaigns.config.Settings, which a process parses once, as a Lambda environment does (tests/test_config.py).
PER_INVOCATION_ENV = ("LAMBDA_REQUEST_ID", "LAMBDA_DEADLINE_MS", "AWS_LAMBDA_LOG_STREAM_NAME", "LOCAL_RANDOM_SEED")


def _start_clock(invocation: Invocation, function: LocalFunction) -> None:
    invocation.started_at = time.time()
    invocation.deadline = invocation.started_at + function.timeout_seconds
    invocation.deadline_monotonic = time.monotonic() + function.timeout_seconds


class _Environment:
    """A warm execution environment: `python -m local.lambda_process --serve`, one line per invocation."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self._answers: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"lambda-env-{process.pid}", daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._answers.put(line)
        self._answers.put(None)  # it ended
        self.process.wait()  # reaped here too, should nobody else wait for it (an idle one closed)

    def call(self, invocation: Invocation, env: dict[str, str]) -> tuple[dict | None, bool]:
        """The invocation's answer, or None if the environment ended first; and whether the deadline passed.
        `env`: the invocation's own variables (PER_INVOCATION_ENV), set in the process before it runs."""
        request = {"event": invocation.event, "request_id": invocation.id,
                   "deadline_ms": int(invocation.deadline * 1000), "env": env}
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: its end of stdout says so
        remaining = max(0.0, invocation.deadline_monotonic - time.monotonic())
        try:
            line = self._answers.get(timeout=remaining)
        except queue.Empty:
            return None, True
        return (json.loads(line), False) if line is not None else (None, False)

    def close(self) -> None:
        """An environment no longer needed: its stdin ends, and so does it."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()


def _outcome_of_answer(answer: dict) -> Outcome:
    if "error" in answer:
        return Outcome("error", None, error=answer["error"])
    return Outcome("ok", None, result=answer.get("result"))


def _kill(process: subprocess.Popen | None) -> None:
    """SIGKILL a child and whatever it started (its session's process group)."""
    if process is None or process.poll() is not None:
        return
    # It may end on its own in the meantime; then there is nothing left to kill.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _wait_until_deadline(process: subprocess.Popen, invocation: Invocation) -> tuple[bytes, bool]:
    """Feed the event, wait for the child until the deadline, SIGKILL it then.

    Returns the child's stdout and whether the deadline killed it.
    """
    remaining = max(0.0, invocation.deadline_monotonic - time.monotonic())
    try:
        stdout, _ = process.communicate(json.dumps(invocation.event).encode(), timeout=remaining)
        return stdout, False
    except subprocess.TimeoutExpired:
        _kill(process)
        stdout, _ = process.communicate()
        return stdout, True


def _signal_word(number: int) -> str:
    if number in _SIGNAL_WORDS:
        return _SIGNAL_WORDS[number]
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _last_line_json(stdout: bytes) -> tuple[bool, Any]:
    lines = stdout.decode("utf-8", errors="replace").strip().splitlines()
    if not lines:
        return False, None
    try:
        return True, json.loads(lines[-1])
    except json.JSONDecodeError:
        return False, None


def _outcome_of(
    invocation: Invocation, function: LocalFunction, returncode: int, stdout: bytes, timed_out: bool
) -> Outcome:
    """Classify a finished child the way Lambda would report it."""
    prefix = f"RequestId: {invocation.id} Error: "
    if timed_out and returncode != 0:
        message = f"Task timed out after {function.timeout_seconds:.2f} seconds"
        return Outcome(
            "timeout", returncode, error={"errorType": "Sandbox.Timedout", "errorMessage": prefix + message}
        )
    if returncode < 0:
        message = f"Runtime exited with error: signal: {_signal_word(-returncode)}"
        return Outcome(
            "killed", returncode, error={"errorType": "Runtime.ExitError", "errorMessage": prefix + message}
        )
    has_line, value = _last_line_json(stdout)
    if returncode == 0 and has_line:
        return Outcome("ok", 0, result=value)
    if returncode != 0 and has_line and isinstance(value, dict) and "errorType" in value:
        return Outcome("error", returncode, error=value)
    message = f"Runtime exited with error: exit status {returncode}"
    if returncode == 0:
        message = "Runtime exited without providing a reason"
    return Outcome(
        "error", returncode, error={"errorType": "Runtime.ExitError", "errorMessage": prefix + message}
    )


def _on_failure_record(invocation: Invocation, function: LocalFunction, outcome: Outcome) -> dict:
    """Lambda's on-failure destination record for a failed async invocation."""
    error = outcome.error or {}
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": invocation.id,
            "functionArn": f"{function.arn()}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": invocation.event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": error.get("errorMessage"), "errorType": error.get("errorType")},
    }


# --- the Invoke REST API -------------------------------------------------------------

_INVOKE_PATH = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations")


class _InvokeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], runtime: LambdaRuntime):
        self.runtime = runtime
        super().__init__(address, _InvokeHandler)


class _InvokeHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: boto3 reuses its connections, which matters for benchmarks.
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections end instead of holding a thread forever.
    timeout = 60
    server: _InvokeServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _INVOKE_PATH.fullmatch(urlsplit(self.path).path)
        if not match:
            self._send_error(
                HTTPStatus.NOT_FOUND, "UnknownOperationException", f"no route for POST {self.path}"
            )
            return
        runtime = self.server.runtime
        name = function_name_from(unquote(match["name"]))
        if name not in runtime.functions:
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
            self._send_error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", f"Function not found: {arn}")
            return
        try:
            event = json.loads(body) if body.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._send_error(
                HTTPStatus.BAD_REQUEST,
                "InvalidRequestContentException",
                "Could not parse request body into json",
            )
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        try:
            if invocation_type == "Event":
                request_id = runtime.invoke_async(name, event)
                self._send(HTTPStatus.ACCEPTED, b"", {"x-amzn-RequestId": request_id})
            elif invocation_type == "RequestResponse":
                self._send_sync_result(runtime.invoke(name, event))
            elif invocation_type == "DryRun":
                self._send(HTTPStatus.NO_CONTENT, b"", {})
            else:
                message = f"Unsupported InvocationType {invocation_type!r}"
                self._send_error(HTTPStatus.BAD_REQUEST, "InvalidParameterValueException", message)
        except RuntimeError as exc:  # stopping
            self._send_error(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceException", str(exc))

    def do_GET(self) -> None:
        runtime = self.server.runtime
        path = urlsplit(self.path).path
        if path == "/_local/invocations":
            live = [{k: v for k, v in entry.items() if k != "event"} for entry in runtime.invocations()]
            self._send_json(HTTPStatus.OK, live)
        elif path == "/_local/history":
            self._send_json(HTTPStatus.OK, runtime.history())
        else:
            self._send_error(
                HTTPStatus.NOT_FOUND, "UnknownOperationException", f"no route for GET {self.path}"
            )

    def _send_sync_result(self, entry: dict) -> None:
        headers = {"x-amzn-RequestId": entry["id"], "X-Amz-Executed-Version": "$LATEST"}
        if entry["outcome"] == "ok":
            self._send(HTTPStatus.OK, json.dumps(entry["result"]).encode(), headers)
        else:
            headers["X-Amz-Function-Error"] = "Unhandled"
            self._send(HTTPStatus.OK, json.dumps(entry["error"]).encode(), headers)

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        self._send(status, json.dumps(value, default=str).encode(), {})

    def _send_error(self, status: HTTPStatus, error_type: str, message: str) -> None:
        # botocore reads the error code from x-amzn-ErrorType and the text from "message".
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._send(status, body, {"x-amzn-ErrorType": error_type})

    def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
