"""The local Lambda runtime (local/runtime.py) and the SAM template reader (local/template.py).

The runtime is driven the way product code drives Lambda: through a real boto3
client. Handlers are small fixtures in tests/fixtures/handlers that run as real
child processes. Nothing here synchronises by sleeping: tests wait on the
runtime's own state (wait_for, wait_idle) or poll, with a deadline, for a file a
handler writes.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from local import template as sam
from local.runtime import LambdaRuntime, LocalFunction, function_name_from, functions_from_template

FIXTURES = Path(__file__).parent / "fixtures"
HANDLERS = FIXTURES / "handlers"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"
# The deadline of the function whose handler never returns, in the deadline test.
SHORT_TIMEOUT = 2


# --- helpers ------------------------------------------------------------------------


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    """Poll for a file that a handler writes atomically; the deadline turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.01)
    return path.read_text()


def failure_record_for(runtime: LambdaRuntime, request_id: str, timeout: float = 20.0) -> dict:
    """The on-failure record that the `recovery` function (an echo handler) received for request_id."""

    def delivered() -> list[dict]:
        return [
            entry
            for entry in runtime.history()
            if entry["function"] == "recovery"
            and entry["outcome"] == "ok"
            and entry["result"]["event"]["requestContext"]["requestId"] == request_id
        ]

    entries = runtime.wait_for(delivered, timeout)
    assert entries, f"no on-failure record for {request_id}; history: {runtime.history()}"
    assert len(entries) == 1
    return entries[0]["result"]["event"]


def history_entry(runtime: LambdaRuntime, request_id: str) -> dict:
    [entry] = [entry for entry in runtime.history() if entry["id"] == request_id]
    return entry


def lambda_client_for(runtime: LambdaRuntime):
    return boto3.client(
        "lambda",
        endpoint_url=runtime.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # One attempt: a retry would hide a wrong answer from the runtime.
        config=Config(retries={"total_max_attempts": 1}),
    )


def invoke_async(client, function_name: str, event: dict) -> str:
    response = client.invoke(FunctionName=function_name, InvocationType="Event", Payload=json.dumps(event))
    assert response["StatusCode"] == 202
    return response["ResponseMetadata"]["RequestId"]


def expected_record_context(request_id: str, function_name: str) -> dict:
    return {
        "requestId": request_id,
        "functionArn": f"arn:aws:lambda:us-east-1:000000000000:function:{function_name}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 1,
    }


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def runtime():
    functions = {
        "echo": LocalFunction("echo", HANDLERS / "echo.py", timeout_seconds=30),
        "fail": LocalFunction("fail", HANDLERS / "fail.py", timeout_seconds=30, on_failure="recovery"),
        "hang": LocalFunction("hang", HANDLERS / "hang.py", timeout_seconds=60, on_failure="recovery"),
        "hang_briefly": LocalFunction(
            "hang_briefly", HANDLERS / "hang.py", timeout_seconds=SHORT_TIMEOUT, on_failure="recovery"
        ),
        # Echoes the on-failure record it receives, so tests can read it from history().
        "recovery": LocalFunction("recovery", HANDLERS / "echo.py", timeout_seconds=30),
    }
    with LambdaRuntime(functions, max_concurrency=4) as local_runtime:
        yield local_runtime


@pytest.fixture
def client(runtime):
    return lambda_client_for(runtime)


@pytest.fixture
def mocked_dynamodb(monkeypatch):
    """moto's in-memory DynamoDB, even when the environment points boto3 at a local server."""
    for name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    with mock_aws():
        yield boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )


# --- the template -------------------------------------------------------------------


def test_short_tags_parse_to_cloudformation_long_form():
    template = sam.load_template(FIXTURE_TEMPLATE)

    table = template["Resources"]["CampaignsTable"]["Properties"]
    assert table["TableName"] == {"Fn::Sub": "campaigns-${Stage}"}
    assert table["BillingMode"] == {"Fn::If": ["IsProd", "PROVISIONED", "PAY_PER_REQUEST"]}
    assert template["Conditions"]["IsProd"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    assert template["Outputs"]["SenderArn"]["Value"] == {"Fn::GetAtt": ["SenderFunction", "Arn"]}
    sender_async = template["Resources"]["SenderFunction"]["Properties"]["EventInvokeConfig"]
    on_failure = sender_async["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"Fn::GetAtt": ["RecoveryFunction", "Arn"]}


def test_table_definition_keeps_keys_and_index_shapes_and_is_accepted_by_dynamodb(mocked_dynamodb):
    definition = sam.table_definition(sam.load_template(FIXTURE_TEMPLATE), "campaigns-test")

    assert definition == {
        "TableName": "campaigns-test",
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
            {"AttributeName": "due_kind", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
        ],
        "KeySchema": [
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "DueIndex",
                "KeySchema": [
                    {"AttributeName": "due_kind", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }
    mocked_dynamodb.create_table(**definition)
    described = mocked_dynamodb.describe_table(TableName="campaigns-test")["Table"]
    assert [index["IndexName"] for index in described["GlobalSecondaryIndexes"]] == ["DueIndex"]


def test_project_template_table_can_be_created(mocked_dynamodb):
    definition = sam.table_definition(sam.load_template(), "campaigns")

    assert definition["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    mocked_dynamodb.create_table(**definition)
    assert mocked_dynamodb.describe_table(TableName="campaigns")["Table"]["TableStatus"] == "ACTIVE"


def test_functions_are_read_with_globals_and_on_failure_destination():
    specs = sam.functions(sam.load_template(FIXTURE_TEMPLATE))

    assert specs == {
        "ApiFunction": sam.FunctionSpec(
            logical_id="ApiFunction",
            handler_path=Path("functions/api/app.py"),
            handler_attr="lambda_handler",
            timeout_seconds=29,  # !Ref ApiTimeout, resolved to the parameter's default
            memory_mb=512,
            environment=("TABLE_NAME", "STAGE"),
            on_failure=None,
            maximum_retry_attempts=2,  # Lambda's default when EventInvokeConfig is absent
        ),
        "SenderFunction": sam.FunctionSpec(
            logical_id="SenderFunction",
            handler_path=Path("functions/sender/app.py"),
            handler_attr="lambda_handler",
            timeout_seconds=900,
            memory_mb=512,
            environment=("TABLE_NAME", "STAGE", "SENDER_FUNCTION_NAME", "WHATSAPP_SECRET_ARN"),
            on_failure="RecoveryFunction",
            maximum_retry_attempts=0,
        ),
        "RecoveryFunction": sam.FunctionSpec(
            logical_id="RecoveryFunction",
            handler_path=Path("functions/recovery/app.py"),
            handler_attr="lambda_handler",
            timeout_seconds=60,
            memory_mb=512,
            environment=("TABLE_NAME", "STAGE"),
            on_failure=None,  # its destination is a queue, not a function
            maximum_retry_attempts=0,
        ),
        "WebhookFunction": sam.FunctionSpec(
            logical_id="WebhookFunction",
            handler_path=Path("functions/webhook/handlers/webhook.py"),
            handler_attr="lambda_handler",
            timeout_seconds=900,
            memory_mb=512,
            environment=("TABLE_NAME", "STAGE"),
            on_failure=None,
            maximum_retry_attempts=2,
        ),
    }


def test_local_functions_from_template_map_names_timeouts_and_on_failure(tmp_path):
    template = sam.load_template(FIXTURE_TEMPLATE)
    names = {"ApiFunction": "api", "SenderFunction": "sender", "RecoveryFunction": "recovery"}

    functions = functions_from_template(
        template, names, timeouts={"sender": 5}, env={"TABLE_NAME": "t"}, base_dir=tmp_path
    )

    assert sorted(functions) == ["api", "recovery", "sender"]
    sender = functions["sender"]
    assert sender == LocalFunction(
        name="sender",
        handler_path=tmp_path / "functions/sender/app.py",
        handler_attr="lambda_handler",
        timeout_seconds=5,
        on_failure="recovery",
        env={"TABLE_NAME": "t"},
        memory_mb=512,
    )
    assert functions["recovery"].timeout_seconds == 60
    assert functions["recovery"].on_failure is None
    with pytest.raises(ValueError, match="RecoveryFunction"):
        functions_from_template(template, {"SenderFunction": "sender"})


@pytest.mark.parametrize(
    "given",
    [
        "sender",
        "sender:$LATEST",
        "000000000000:function:sender",
        "arn:aws:lambda:us-east-1:000000000000:function:sender",
        "arn:aws:lambda:us-east-1:000000000000:function:sender:$LATEST",
    ],
)
def test_function_name_from_name_or_arn(given):
    assert function_name_from(given) == "sender"


# --- synchronous invocations ----------------------------------------------------------


def test_request_response_returns_the_handler_result(runtime, client):
    event = {"campaign_id": "c-1", "recipients": [1, 2, 3]}

    response = client.invoke(FunctionName="echo", Payload=json.dumps(event))

    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    result = json.loads(response["Payload"].read())
    assert result["event"] == event
    assert result["context"] == {
        "aws_request_id": response["ResponseMetadata"]["RequestId"],
        "function_name": "echo",
        "function_version": "$LATEST",
        "invoked_function_arn": "arn:aws:lambda:us-east-1:000000000000:function:echo",
        "memory_limit_in_mb": "128",
        "log_group_name": "/aws/lambda/echo",
    }
    assert result["pid"] != os.getpid()  # it ran in a process of its own
    entry = history_entry(runtime, response["ResponseMetadata"]["RequestId"])
    assert (entry["outcome"], entry["exit_code"], entry["pid"]) == ("ok", 0, result["pid"])


def test_function_can_be_named_by_arn(client):
    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo"

    response = client.invoke(FunctionName=arn, Payload=b"{}")

    assert json.loads(response["Payload"].read())["event"] == {}


def test_request_response_reports_a_handler_exception_like_lambda(runtime, client):
    response = client.invoke(FunctionName="fail", Payload=json.dumps({"message": "template missing"}))

    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "CampaignExploded"
    assert error["errorMessage"] == "template missing"
    assert any("fail.py" in frame for frame in error["stackTrace"])
    # On-failure destinations are for asynchronous invocations only.
    assert runtime.wait_idle(10)
    assert [entry["function"] for entry in runtime.history()] == ["fail"]


def test_unknown_function_is_resource_not_found(client):
    with pytest.raises(ClientError) as raised:
        client.invoke(FunctionName="nope", Payload=b"{}")

    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_remaining_time_decreases_and_matches_the_deadline(runtime, client):
    response = client.invoke(FunctionName="echo", Payload=b"{}")
    result = json.loads(response["Payload"].read())

    first, second = result["readings"]
    deadline_ms = result["deadline_ms"]
    for reading in result["readings"]:
        # remaining = deadline - now, with now somewhere between the two clock readings
        before, remaining, after = reading["before_ms"], reading["remaining_ms"], reading["after_ms"]
        assert deadline_ms - after <= remaining <= deadline_ms - before
    assert 0 < second["remaining_ms"] <= first["remaining_ms"] <= 30_000
    # The deadline the handler sees is the one the runtime enforces: timeout_seconds after start.
    entry = history_entry(runtime, response["ResponseMetadata"]["RequestId"])
    assert deadline_ms == int(entry["deadline"] * 1000)
    assert entry["deadline"] - entry["started_at"] == pytest.approx(30)


def test_handler_output_goes_to_the_log_not_the_result(tmp_path):
    log_path = tmp_path / "lambda.log"
    functions = {"echo": LocalFunction("echo", HANDLERS / "echo.py", timeout_seconds=30)}
    with LambdaRuntime(functions, log_path=log_path) as local_runtime:
        response = lambda_client_for(local_runtime).invoke(FunctionName="echo", Payload=b'{"a": 1}')

        assert json.loads(response["Payload"].read())["event"] == {"a": 1}
    assert "echo handler says hello on stdout" in log_path.read_text()


# --- asynchronous invocations ----------------------------------------------------------


def test_event_invocation_is_accepted_then_runs(runtime, client, tmp_path):
    output = tmp_path / "echo.json"
    event = {"write_to": str(output)}

    request_id = invoke_async(client, "echo", event)

    assert runtime.wait_idle(20)
    written = json.loads(output.read_text())
    assert written["event"] == event
    assert written["context"]["aws_request_id"] == request_id
    assert history_entry(runtime, request_id)["outcome"] == "ok"


def test_deadline_kills_the_child_and_reports_the_timeout_to_on_failure(runtime, client, tmp_path):
    pid_file = tmp_path / "pid"
    event = {"pid_file": str(pid_file), "campaign_id": "c-1", "shard": 0}

    request_id = invoke_async(client, "hang_briefly", event)
    pid = int(wait_for_file(pid_file))  # the handler is running: only the deadline can end it
    record = failure_record_for(runtime, request_id)

    assert record["version"] == "1.0"
    assert record["requestContext"] == expected_record_context(request_id, "hang_briefly")
    assert record["requestPayload"] == event
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "Sandbox.Timedout"
    assert f"Task timed out after {SHORT_TIMEOUT:.2f} seconds" in record["responsePayload"]["errorMessage"]
    entry = history_entry(runtime, request_id)
    assert (entry["pid"], entry["outcome"], entry["exit_code"]) == (pid, "timeout", -signal.SIGKILL)


def test_external_sigkill_of_a_live_child_reaches_the_on_failure_function(runtime, client, tmp_path):
    pid_file = tmp_path / "pid"
    event = {"pid_file": str(pid_file), "campaign_id": "c-2"}

    request_id = invoke_async(client, "hang", event)
    pid = int(wait_for_file(pid_file))

    [live] = runtime.invocations()
    assert (live["id"], live["function"], live["pid"], live["event"]) == (request_id, "hang", pid, event)
    assert live["deadline"] - live["started_at"] == pytest.approx(60)
    with urllib.request.urlopen(runtime.url + "/_local/invocations") as response:
        assert [(item["id"], item["pid"]) for item in json.load(response)] == [(request_id, pid)]

    os.kill(pid, signal.SIGKILL)
    record = failure_record_for(runtime, request_id)

    assert record["requestContext"] == expected_record_context(request_id, "hang")
    assert record["requestPayload"] == event
    assert record["responsePayload"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: signal: killed" in record["responsePayload"]["errorMessage"]
    entry = history_entry(runtime, request_id)
    assert (entry["pid"], entry["outcome"], entry["exit_code"]) == (pid, "killed", -signal.SIGKILL)
    assert runtime.wait_idle(10)
    assert runtime.invocations() == []


def test_handler_exception_reaches_the_on_failure_function(runtime, client):
    event = {"message": "no such template", "campaign_id": "c-3"}

    request_id = invoke_async(client, "fail", event)
    record = failure_record_for(runtime, request_id)

    assert record["requestContext"] == expected_record_context(request_id, "fail")
    assert record["requestPayload"] == event
    assert record["responsePayload"] == {"errorMessage": "no such template", "errorType": "CampaignExploded"}
    entry = history_entry(runtime, request_id)
    assert (entry["outcome"], entry["exit_code"]) == ("error", 1)


def test_concurrency_is_capped_and_stop_kills_every_live_child(tmp_path):
    functions = {"hang": LocalFunction("hang", HANDLERS / "hang.py", timeout_seconds=60)}
    local_runtime = LambdaRuntime(functions, max_concurrency=2).start()
    try:
        client = lambda_client_for(local_runtime)
        pid_files = [tmp_path / f"pid-{n}" for n in range(3)]
        request_ids = [invoke_async(client, "hang", {"pid_file": str(path)}) for path in pid_files]

        # The queue is first in, first out: the first two run, the third waits for a free slot.
        first_pids = [int(wait_for_file(path)) for path in pid_files[:2]]
        assert sorted(live["pid"] for live in local_runtime.invocations()) == sorted(first_pids)
        assert local_runtime.queued() == 1

        os.kill(first_pids[0], signal.SIGKILL)
        third_pid = int(wait_for_file(pid_files[2]))
        live_pids = sorted(live["pid"] for live in local_runtime.invocations())
        assert live_pids == sorted([first_pids[1], third_pid])
    finally:
        local_runtime.stop()

    outcomes = {entry["id"]: (entry["outcome"], entry["exit_code"]) for entry in local_runtime.history()}
    assert outcomes == {request_id: ("killed", -signal.SIGKILL) for request_id in request_ids}
    assert local_runtime.invocations() == []


# --- warm execution environments (the local stack's runtime) -------------------------------


@pytest.fixture
def warm_runtime():
    functions = {
        "echo": LocalFunction("echo", HANDLERS / "echo.py", timeout_seconds=30),
        "fail": LocalFunction("fail", HANDLERS / "fail.py", timeout_seconds=30, on_failure="recovery"),
        "hang": LocalFunction("hang", HANDLERS / "hang.py", timeout_seconds=60, on_failure="recovery"),
        "hang_briefly": LocalFunction(
            "hang_briefly", HANDLERS / "hang.py", timeout_seconds=SHORT_TIMEOUT, on_failure="recovery"
        ),
        "recovery": LocalFunction("recovery", HANDLERS / "echo.py", timeout_seconds=30),
    }
    with LambdaRuntime(functions, max_concurrency=4, warm=True, spares={"hang": 1}) as local_runtime:
        yield local_runtime


def test_a_warm_environment_runs_one_invocation_after_another_in_one_process(warm_runtime):
    client = lambda_client_for(warm_runtime)
    first, second = (json.loads(client.invoke(FunctionName="echo", Payload=json.dumps({"n": n}))["Payload"].read())
                     for n in (1, 2))

    assert first["pid"] == second["pid"] != os.getpid()
    assert (first["event"], second["event"]) == ({"n": 1}, {"n": 2})
    # Each invocation has its own request id and deadline, as on Lambda.
    assert first["context"]["aws_request_id"] != second["context"]["aws_request_id"]
    assert first["deadline_ms"] <= second["deadline_ms"]
    for result in (first, second):
        for reading in result["readings"]:
            assert reading["before_ms"] + reading["remaining_ms"] <= result["deadline_ms"]


def test_a_handler_exception_keeps_the_warm_environment_and_reaches_on_failure(warm_runtime):
    client = lambda_client_for(warm_runtime)
    request_id = invoke_async(client, "fail", {"message": "template missing"})

    record = failure_record_for(warm_runtime, request_id)
    assert record["responsePayload"] == {"errorMessage": "template missing", "errorType": "CampaignExploded"}
    failed = history_entry(warm_runtime, request_id)
    assert failed["outcome"] == "error"
    response = client.invoke(FunctionName="fail", Payload=b"{}")
    assert response["FunctionError"] == "Unhandled"
    assert history_entry(warm_runtime, response["ResponseMetadata"]["RequestId"])["pid"] == failed["pid"]


def test_a_killed_warm_environment_fails_its_invocation_and_is_replaced(warm_runtime, tmp_path):
    client = lambda_client_for(warm_runtime)
    pid_file = tmp_path / "pid"
    request_id = invoke_async(client, "hang", {"pid_file": str(pid_file)})
    pid = int(wait_for_file(pid_file))

    os.kill(pid, signal.SIGKILL)

    record = failure_record_for(warm_runtime, request_id)
    assert record["responsePayload"]["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert history_entry(warm_runtime, request_id)["outcome"] == "killed"
    second_file = tmp_path / "pid-2"
    invoke_async(client, "hang", {"pid_file": str(second_file)})
    assert int(wait_for_file(second_file)) != pid


def test_the_deadline_kills_a_warm_environment_like_a_cold_one(warm_runtime, tmp_path):
    client = lambda_client_for(warm_runtime)
    pid_file = tmp_path / "pid"
    request_id = invoke_async(client, "hang_briefly", {"pid_file": str(pid_file)})
    pid = int(wait_for_file(pid_file))

    record = failure_record_for(warm_runtime, request_id)
    assert "Task timed out after" in record["responsePayload"]["errorMessage"]
    entry = history_entry(warm_runtime, request_id)
    assert (entry["pid"], entry["outcome"], entry["exit_code"]) == (pid, "timeout", -signal.SIGKILL)


def test_a_spare_environment_is_loaded_before_it_is_needed_and_kept_ready(warm_runtime, tmp_path):
    def idle_hang_pids() -> list[int]:
        return warm_runtime.idle_environments().get("hang", [])

    [spare] = warm_runtime.wait_for(idle_hang_pids, 10)  # started with the runtime, before any invocation
    client = lambda_client_for(warm_runtime)
    pid_file = tmp_path / "pid"
    invoke_async(client, "hang", {"pid_file": str(pid_file)})

    assert int(wait_for_file(pid_file)) == spare  # the invocation took the spare
    # and another one took its place
    [replacement] = warm_runtime.wait_for(lambda: [pid for pid in idle_hang_pids() if pid != spare], 10)
    assert replacement != spare


def test_stop_kills_idle_and_busy_warm_environments(tmp_path):
    functions = {"echo": LocalFunction("echo", HANDLERS / "echo.py", timeout_seconds=30),
                 "hang": LocalFunction("hang", HANDLERS / "hang.py", timeout_seconds=60)}
    local_runtime = LambdaRuntime(functions, warm=True, spares={"echo": 1}).start()
    client = lambda_client_for(local_runtime)
    idle_pid = json.loads(client.invoke(FunctionName="echo", Payload=b"{}")["Payload"].read())["pid"]
    pid_file = tmp_path / "pid"
    invoke_async(client, "hang", {"pid_file": str(pid_file)})
    busy_pid = int(wait_for_file(pid_file))

    local_runtime.stop()

    for pid in (idle_pid, busy_pid):
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, f"pid {pid} outlived the runtime"
            time.sleep(0.01)
