"""The command line: `python -m local.fakegraph --port 5005 ...` (--help lists the settings)."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading

from .. import fakegraph as package
from .core import FakeGraph
from .process import LISTENING
from .settings import SETTING_NAMES


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.fakegraph", description=package.__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=5005, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--token", help="expected bearer token (default: accept any)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter", type=float, default=0.0, help="fraction, 0.2 = ±20 %%")
    parser.add_argument("--rate-cap", type=float, dest="rate_cap_mps", help="messages/s per phone number id")
    parser.add_argument("--fail-ratio", type=float, default=0.0)
    parser.add_argument("--fail-code", type=int, default=131000)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--reject",
        action="append",
        default=[],
        metavar="NUMBER=CODE",
        help="answer sends to NUMBER with error CODE (repeatable)",
    )
    parser.add_argument(
        "--fatal-code", type=int, help="answer every send with this error (190: revoked token)"
    )
    parser.add_argument("--webhook-url")
    parser.add_argument("--app-secret")
    parser.add_argument("--webhook-failed-ratio", type=float, default=0.0)
    parser.add_argument("--webhook-delay-ms", type=float, default=10.0)
    parser.add_argument("--nice", type=int, default=0,
                        help="added to the process's nice value before it serves (below 0 needs root)")
    args = parser.parse_args(argv)
    try:
        args.reject_numbers = dict(_number_and_code(item) for item in args.reject)
    except ValueError:
        parser.error("--reject takes NUMBER=CODE, e.g. --reject 919876543210=131026")
    return args


def _number_and_code(item: str) -> tuple[str, int]:
    number, _, code = item.partition("=")
    return number, int(code)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # before any thread starts: Linux keeps a nice value per thread
    # Each setting's flag stores under the setting's own name; the rest (port, nice, reject) are not settings.
    settings = {name: value for name, value in vars(args).items() if name in SETTING_NAMES}
    try:
        fake = FakeGraph(port=args.port, **settings)
    except ValueError as error:
        print(f"fakegraph: {error}", file=sys.stderr)
        return 2
    try:
        fake.start()
    except OSError as error:
        reason = (
            "is already in use" if error.errno == errno.EADDRINUSE else f"cannot be bound ({error.strerror})"
        )
        print(f"fakegraph: port {args.port} on {fake.host} {reason}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    print(f"{LISTENING}{fake.url}", flush=True)
    while not stop_requested.wait(timeout=1.0):
        pass  # a timed wait keeps the main thread responsive to signals
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
