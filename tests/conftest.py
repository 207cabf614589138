"""Shared fixtures: one moto server per session, and a fresh local stack (table, secret, fake
Graph API, Lambda runtime, recovery schedule) per test that asks for one."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings as hypothesis_settings

from campaigns import config
from local.storage import MotoServer, aws_env, free_port

# boto3 clients keep the endpoint they were made with: it is fixed here, before any test makes one.
# settings() parses the environment once (as at a Lambda cold start): whatever changes the
# variables after (make_stack, set_env) calls config.reload().
TABLE_NAME = "campaigns"
# Chosen once per test session, even if this module is imported twice (as `conftest` by pytest
# and as `tests.conftest`): the second import must not point the environment at other ports.
MOTO_PORT = int(os.environ.setdefault("TEST_MOTO_PORT", str(free_port())))
LAMBDA_PORT = int(os.environ.setdefault("TEST_LAMBDA_PORT", str(free_port())))
os.environ.update(aws_env(f"http://127.0.0.1:{MOTO_PORT}", TABLE_NAME))
os.environ.update(
    {
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{LAMBDA_PORT}",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_SERVICE_NAME": "campaigns-test",
        "SENDER_FUNCTION_NAME": "sender",
    }
)

# Property tests draw the same examples on every run (a failure in CI fails again on a laptop), and
# print the failing example's blob so it can be replayed with @reproduce_failure.
hypothesis_settings.register_profile("project", derandomize=True, print_blob=True)
hypothesis_settings.load_profile("project")


@pytest.fixture(scope="session")
def moto_server():
    with MotoServer(MOTO_PORT) as server:
        yield server


@pytest.fixture
def make_stack(moto_server, tmp_path):
    """Start a local stack with the given StackConfig overrides; stopped after the test."""
    from local.stack import LocalStack, StackConfig

    started: list[LocalStack] = []
    saved_env = dict(os.environ)  # the stack sets variables for this process too: undone after the test

    def make(with_scheduler: bool = True, **overrides) -> LocalStack:
        moto_server.reset()
        config = StackConfig(table_name=TABLE_NAME, lambda_port=LAMBDA_PORT, **overrides)
        stack = LocalStack(config, moto=moto_server, with_scheduler=with_scheduler,
                           log_path=str(tmp_path / "functions.log"))
        started.append(stack.start())
        return stack

    yield make
    for stack in started:
        stack.stop()
    os.environ.clear()
    os.environ.update(saved_env)
    config.reload()


@pytest.fixture
def set_env(monkeypatch):
    """`set_env(NAME="value", ...)`: environment variables for this test only, which settings() sees."""

    def set_(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        config.reload()

    yield set_
    monkeypatch.undo()
    config.reload()


@pytest.fixture
def table(moto_server):
    """An empty table made from template.yaml, for tests of the protocol without the whole stack."""
    from local.storage import create_table

    moto_server.reset()
    create_table(moto_server.url, TABLE_NAME)
    return TABLE_NAME
