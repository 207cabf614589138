"""Lambda invocations in an OS process: the child side of the local runtime.

    python -m local.lambda_process <handler file> <handler attribute>  < event.json
    python -m local.lambda_process --serve <handler file> <handler attribute>

The runtime (local/runtime.py) starts this module once per invocation, or, with
`--serve`, once per execution environment that then runs one invocation after the
other, as a warm Lambda environment does. Once: it reads the event from stdin, loads
the handler from its file, calls it with a context like Lambda's, and prints the JSON
result as the last line of stdout. When the handler raises, it prints Lambda's error
document (errorMessage, errorType, stackTrace) and exits 1. Served: the handler's file
is loaded once (Lambda's init phase), and each line on stdin is one invocation
(`{"event", "request_id", "deadline_ms", "env"}`: `env`, the variables of this invocation only, is set
in the process first), answered with one line on stdout,
`{"result": ...}` or `{"error": <error document>}`; the process ends when stdin does.
Anything the handler itself prints goes to stderr, the log stream, so it can never be
mistaken for the result.

The deadline is not enforced here: the parent kills this process when it passes,
exactly as Lambda does. This side only reports it through
`context.get_remaining_time_in_millis()`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any

# Linux prctl option: deliver a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


@dataclass
class LambdaContext:
    """The attributes of Lambda's Python context object that handlers use."""

    aws_request_id: str
    function_name: str
    function_version: str
    invoked_function_arn: str
    # A string, as in the real Python runtime (it is read from the environment there too).
    memory_limit_in_mb: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int
    client_context: Any = None
    identity: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))

    @classmethod
    def from_env(cls) -> LambdaContext:
        """Build the context from the variables the runtime sets for this invocation."""
        env = os.environ
        name = env["AWS_LAMBDA_FUNCTION_NAME"]
        region = env.get("AWS_REGION", "us-east-1")
        return cls(
            aws_request_id=env["LAMBDA_REQUEST_ID"],
            function_name=name,
            function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            invoked_function_arn=env.get(
                "LAMBDA_INVOKED_FUNCTION_ARN", f"arn:aws:lambda:{region}:000000000000:function:{name}"
            ),
            memory_limit_in_mb=env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            log_group_name=env.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{name}"),
            log_stream_name=env.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
            deadline_ms=int(env["LAMBDA_DEADLINE_MS"]),
        )


class InvocationError(Exception):
    """A failure the runtime itself reports, with Lambda's errorType (Runtime.*)."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


def die_with_parent() -> None:
    """Make sure a handler cannot outlive the runtime that would have killed it.

    If the runtime is SIGKILLed itself (a crashed test run), nobody is left to
    enforce deadlines; without this, a handler that blocks forever would stay
    behind as an orphan. Linux only; elsewhere this is a no-op.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    # The parent may have died before prctl took effect; then we were re-parented already.
    expected_parent = os.environ.get("LAMBDA_RUNTIME_PID")
    if expected_parent and os.getppid() != int(expected_parent):
        os._exit(1)


def seed_random() -> None:
    """With LOCAL_RANDOM_SEED (the runtime sets `<seed>:<invocation number>`), the handler's draws
    (backoff jitter, ids taken from `random`) repeat from run to run: a failing crash run is
    replayed from the seed it logged."""
    seed = os.environ.get("LOCAL_RANDOM_SEED")
    if seed:
        random.seed(seed)


def take_stdout_for_result() -> IO[str]:
    """Keep stdout for the result only, and send everything else written to it to stderr.

    fd 1 is pointed at stderr, so even output that bypasses sys.stdout (C code,
    child processes) lands in the log rather than in the result channel.
    """
    result_stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return result_stream


def module_name_for(handler_path: str, function_name: str) -> str:
    # Every function's handler is called app.py; a per-function name keeps them apart.
    return "_lambda_" + re.sub(r"\W", "_", f"{function_name}_{Path(handler_path).stem}")


def load_handler(handler_path: str, handler_attr: str, function_name: str) -> Callable[[Any, Any], Any]:
    path = Path(handler_path)
    if not path.is_file():
        raise InvocationError("Runtime.ImportModuleError", f"Unable to import module: no file {handler_path}")
    # Lambda runs from the code directory, so a handler can import the files beside it.
    sys.path.insert(0, str(path.resolve().parent))
    name = module_name_for(handler_path, function_name)
    spec = importlib.util.spec_from_file_location(name, path)
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvocationError(
            "Runtime.ImportModuleError", f"Unable to import module '{name}': {exc}"
        ) from exc
    handler = getattr(module, handler_attr, None)
    if not callable(handler):
        raise InvocationError(
            "Runtime.HandlerNotFound", f"Handler '{handler_attr}' missing on module '{path}'"
        )
    return handler


def read_event(stream: IO[str]) -> Any:
    raw = stream.read()
    # boto3 sends no body when invoke() gets no Payload; Lambda hands the handler {} then.
    return json.loads(raw) if raw.strip() else {}


def error_document(exc: BaseException, request_id: str) -> dict:
    """Lambda's JSON for an unhandled error."""
    if isinstance(exc, InvocationError):
        return {
            "errorMessage": str(exc),
            "errorType": exc.error_type,
            "requestId": request_id,
            "stackTrace": [],
        }
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(traceback.extract_tb(exc.__traceback__)),
    }


def log_error(exc: BaseException) -> None:
    """Log the error as Lambda does; the runtime's own failures have no useful traceback."""
    if isinstance(exc, InvocationError):
        print(f"[ERROR] {exc.error_type}: {exc}", file=sys.stderr)
        return
    print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


def run(handler_path: str, handler_attr: str, result_stream: IO[str]) -> int:
    """Invoke the handler once; write the result or error line; return the exit status."""
    context = LambdaContext.from_env()
    try:
        event = read_event(sys.stdin)
        handler = load_handler(handler_path, handler_attr, context.function_name)
        result = handler(event, context)
        try:
            line = json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise InvocationError("Runtime.MarshalError", f"Unable to marshal response: {exc}") from exc
    except Exception as exc:
        log_error(exc)
        line, status = json.dumps(error_document(exc, context.aws_request_id)), 1
    else:
        status = 0
    result_stream.write(line + "\n")
    result_stream.flush()
    return status


def serve(handler_path: str, handler_attr: str, requests: IO[str], result_stream: IO[str]) -> int:
    """Run invocations one after the other, one line each, until `requests` ends (a warm environment).

    The handler's file is loaded first, before any invocation arrives (Lambda's init phase). A file
    that fails to load answers the first invocation with its error and ends the environment, as
    Lambda discards an environment whose init failed.
    """
    handler, init_error = None, None
    try:
        handler = load_handler(handler_path, handler_attr, os.environ["AWS_LAMBDA_FUNCTION_NAME"])
    except Exception as exc:
        init_error = exc
    for line in requests:
        request = json.loads(line)
        os.environ.update(request.get("env") or {})  # this invocation's own variables
        seed_random()  # from this invocation's LOCAL_RANDOM_SEED, when the runtime sets one
        # What LambdaContext.from_env reads, for this invocation.
        os.environ["LAMBDA_REQUEST_ID"] = request["request_id"]
        os.environ["LAMBDA_DEADLINE_MS"] = str(request["deadline_ms"])
        context = LambdaContext.from_env()
        try:
            if init_error is not None:
                raise init_error
            result = handler(request["event"], context)
            try:
                answer = json.dumps({"result": result})
            except (TypeError, ValueError) as exc:
                raise InvocationError("Runtime.MarshalError", f"Unable to marshal response: {exc}") from exc
        except Exception as exc:
            log_error(exc)
            answer = json.dumps({"error": error_document(exc, context.aws_request_id)})
        result_stream.write(answer + "\n")
        result_stream.flush()
        if init_error is not None:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    served = bool(args) and args[0] == "--serve"
    if served:
        args = args[1:]
    if len(args) != 2:
        print("usage: python -m local.lambda_process [--serve] HANDLER_FILE HANDLER_ATTRIBUTE", file=sys.stderr)
        return 2
    die_with_parent()
    if served:
        return serve(args[0], args[1], sys.stdin, take_stdout_for_result())
    seed_random()
    return run(args[0], args[1], take_stdout_for_result())


if __name__ == "__main__":
    sys.exit(main())
