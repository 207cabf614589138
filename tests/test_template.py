"""The wiring of template.yaml, checked on its translation to plain CloudFormation (offline).

SAM's own translator (the one `sam deploy` and CloudFormation run) turns the template into the
resources AWS will create, so these tests look at what gets deployed: generated roles, the
schedule, invoke configs, the API's OpenAPI body. Also checks events/ and samconfig.toml.
`make template-checks` adds cfn-lint, `sam validate --lint`, `sam build` and checkov.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import parse_qsl

import pynamodb.models
import pytest
from samtranslator.yaml_helper import yaml_parse

from campaigns import models
from campaigns.config import Settings
from campaigns.observability import NAMESPACE, Metric

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
TEST_APP_SECRET = "test-app-secret"  # test-only; the sample events are signed with it
SENDER_NAME = {"Fn::Sub": "${AWS::StackName}-sender"}
SENDER_ARN = {
    "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-sender"
}
TABLE_RESOURCES = [{"Fn::GetAtt": ["CampaignsTable", "Arn"]}, {"Fn::Sub": "${CampaignsTable.Arn}/index/*"}]
FUNCTIONS = {
    "ApiFunction": "functions/api/",
    "SenderFunction": "functions/sender/",
    "RecoveryFunction": "functions/recovery/",
    "WebhookFunction": "functions/webhook/",
}
API_ROUTES = {
    ("POST", "/campaigns"),
    ("GET", "/campaigns"),
    ("GET", "/campaigns/{id}"),
    ("POST", "/campaigns/{id}/recipients"),
    ("GET", "/campaigns/{id}/recipients"),
    ("GET", "/campaigns/{id}/events"),
    ("GET", "/campaigns/{id}/recipients.csv"),
    ("POST", "/campaigns/{id}/send"),
    ("POST", "/campaigns/{id}/pause"),
    ("POST", "/campaigns/{id}/resume"),
    ("POST", "/campaigns/{id}/cancel"),
    ("POST", "/campaigns/{id}/retry-failed"),
    ("POST", "/campaigns/{id}/test"),  # issue 21: test sends
    ("POST", "/campaigns/{id}/clone"),  # issue 21: clones
    ("GET", "/numbers"),
    ("PUT", "/numbers/{phone_number_id}"),
    ("GET", "/numbers/{phone_number_id}"),
    ("GET", "/suppressions"),
    ("GET", "/suppressions/{phone}"),
    ("PUT", "/suppressions/{phone}"),
    ("DELETE", "/suppressions/{phone}"),
    ("GET", "/openapi.json"),
}
WEBHOOK_ROUTES = {("GET", "/webhook"), ("POST", "/webhook")}


# --- translation ------------------------------------------------------------------------------


def _load_translator():
    # The same translation checkov scans (scripts/sam-translate: offline, stubbed code URIs).
    loader = importlib.machinery.SourceFileLoader("sam_translate", str(ROOT / "scripts" / "sam-translate"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sam() -> dict:
    return yaml_parse((ROOT / "template.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cfn() -> dict:
    return _load_translator().translate(ROOT / "template.yaml")


def _of_type(cfn: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == type_}


def _getatt(logical_id: str, attr: str = "Arn") -> dict:
    return {"Fn::GetAtt": [logical_id, attr]}


def _is_getatt(value, logical_id: str, attr: str = "Arn") -> bool:
    return value in (_getatt(logical_id, attr), {"Fn::GetAtt": f"{logical_id}.{attr}"})


def _listify(value) -> list:
    return value if isinstance(value, list) else [value]


def _role_of(cfn: dict, function_id: str) -> dict:
    role = cfn["Resources"][function_id]["Properties"]["Role"]
    assert role == _getatt(role["Fn::GetAtt"][0]), role
    return cfn["Resources"][role["Fn::GetAtt"][0]]


def _statements(role: dict) -> list[dict]:
    return [
        s for policy in role["Properties"].get("Policies", []) for s in policy["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict) -> list[str]:
    return _listify(statement["Action"])


def _function_statements(cfn: dict) -> dict[str, list[dict]]:
    return {fid: _statements(_role_of(cfn, fid)) for fid in FUNCTIONS}


# --- functions and layers ---------------------------------------------------------------------


def test_functions_code_runtime_and_layers(sam, cfn):
    glob = sam["Globals"]["Function"]
    assert glob["Runtime"] == "python3.12"
    assert glob["Architectures"] == ["arm64"]
    assert glob["Tracing"] == "Active"
    assert glob["Layers"] == [{"Ref": "CommonLayer"}]
    for fid, code_uri in FUNCTIONS.items():
        props = sam["Resources"][fid]["Properties"]
        assert sam["Resources"][fid]["Type"] == "AWS::Serverless::Function"
        assert props["CodeUri"] == code_uri
        assert props["Handler"] == "app.lambda_handler"
        fn = cfn["Resources"][fid]["Properties"]
        assert fn["Runtime"] == "python3.12" and fn["Architectures"] == ["arm64"]
        # The webhook (~3 invocations a message) is not traced: Lambda's fixed sampling would be 12 % of a
        # campaign's cost (bench.costs); nor are its platform lines logged (its metrics stay).
        assert fn["TracingConfig"] == {"Mode": "PassThrough" if fid == "WebhookFunction" else "Active"}
    webhook_logging = cfn["Resources"]["WebhookFunction"]["Properties"]["LoggingConfig"]
    assert (webhook_logging["LogFormat"], webhook_logging["SystemLogLevel"]) == ("JSON", "WARN")
    assert cfn["Resources"]["SenderFunction"]["Properties"]["Timeout"] == 900


def test_one_layer_bundles_powertools_and_puts_the_domain_package_on_the_import_path(sam):
    layers = [r for r, v in sam["Resources"].items() if v["Type"] == "AWS::Serverless::LayerVersion"]
    assert layers == ["CommonLayer"]
    for fid in FUNCTIONS:
        assert "Layers" not in sam["Resources"][fid]["Properties"], f"{fid}: the Globals' layer"
    common = sam["Resources"]["CommonLayer"]
    assert common["Properties"]["ContentUri"] == "layers/common"
    assert common["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert common["Properties"]["CompatibleArchitectures"] == ["arm64"]
    # SAM's python3.12 builder would copy the whole ContentUri under python/ (the package in
    # /opt/python/python/campaigns): layers/common/Makefile builds the layer instead.
    assert common["Metadata"]["BuildMethod"] == "makefile"
    assert common["Metadata"]["BuildArchitecture"] == "arm64"
    content = ROOT / common["Properties"]["ContentUri"]
    makefile = (content / "Makefile").read_text()
    assert re.search(r"^build-CommonLayer:", makefile, re.M)
    for flag in ("--platform manylinux2014_aarch64", "--python-version 3.12", "--only-binary=:all:"):
        assert flag in makefile
    assert '--target "$(ARTIFACTS_DIR)/python" -r requirements.txt' in makefile
    assert 'cp -R python/campaigns "$(ARTIFACTS_DIR)/python/campaigns"' in makefile
    assert (content / "python" / "campaigns" / "__init__.py").is_file()
    requirements = (content / "requirements.txt").read_text()
    assert re.search(r"^aws-lambda-powertools(\[[a-z,]+\])?==", requirements, re.M), (
        "Powertools must be pinned"
    )
    assert "PowertoolsLayerArn" not in sam["Parameters"]


def test_environment_names_are_settings(sam, cfn):
    env = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert env["POWERTOOLS_SERVICE_NAME"] == {"Ref": "AWS::StackName"}
    assert env["TABLE_NAME"] == {"Ref": "CampaignsTable"}
    assert env["WHATSAPP_SECRET_ARN"] == {"Ref": "WhatsAppSecretArn"}
    assert env["GRAPH_API_VERSION"] == {"Ref": "GraphApiVersion"}
    assert env["LEASE_SECONDS"] == {"Ref": "LeaseSeconds"}
    # The sender's name, as a string: the same one its FunctionName is built from.
    assert env["SENDER_FUNCTION_NAME"] == SENDER_NAME
    assert cfn["Resources"]["SenderFunction"]["Properties"]["FunctionName"] == SENDER_NAME
    settings_names = {f.name.upper() for f in dataclasses.fields(Settings)}
    for fid in FUNCTIONS:
        names = set(cfn["Resources"][fid]["Properties"]["Environment"]["Variables"])
        ours = {n for n in names if not n.startswith("POWERTOOLS_") and n != "LOG_LEVEL"}
        assert ours <= settings_names, (
            f"{fid}: {ours - settings_names} are not campaigns.config.Settings fields"
        )


def test_parameters(sam):
    params = sam["Parameters"]
    assert "Default" not in params["WhatsAppSecretArn"], "the secret ARN is the deployer's to give"
    assert re.match(
        params["WhatsAppSecretArn"]["AllowedPattern"],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:whatsapp-campaigns-AbC123",
    )
    assert params["AlarmEmail"]["Default"] == ""
    assert params["RecoverySchedule"]["Default"] == "rate(1 minute)"
    assert str(params["LeaseSeconds"]["Default"]) == "60"
    assert params["GraphApiVersion"]["Default"] == "v23.0"
    assert "Stage" in params
    assert sam["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


# --- recovery wiring --------------------------------------------------------------------------


def test_schedule_ticks_the_recovery_function_at_the_rate_parameter(cfn):
    (schedule,) = _of_type(cfn, "AWS::Scheduler::Schedule").values()
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "RecoverySchedule"}
    target = props["Target"]
    assert _is_getatt(target["Arn"], "RecoveryFunction")
    assert json.loads(target["Input"]) == {"action": "tick"}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert _is_getatt(target["DeadLetterConfig"]["Arn"], "RecoveryScheduleDLQ")
    role = cfn["Resources"][target["RoleArn"]["Fn::GetAtt"][0]]
    stmts = _statements(role)
    assert any(
        "lambda:InvokeFunction" in _actions(s) and _is_getatt(s["Resource"], "RecoveryFunction")
        for s in stmts
    )
    assert any(
        "sqs:SendMessage" in _actions(s) and _is_getatt(s["Resource"], "RecoveryScheduleDLQ") for s in stmts
    )


def _invoke_config(cfn: dict, function_id: str) -> dict:
    (config,) = [
        c["Properties"]
        for c in _of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    return config


def test_failed_sender_batch_goes_straight_to_recovery_without_lambda_retries(cfn):
    config = _invoke_config(cfn, "SenderFunction")
    assert config["MaximumRetryAttempts"] == 0
    assert _is_getatt(config["DestinationConfig"]["OnFailure"]["Destination"], "RecoveryFunction")
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600
    stmts = _statements(_role_of(cfn, "SenderFunction"))
    assert any(
        "lambda:InvokeFunction" in _actions(s) and _is_getatt(s["Resource"], "RecoveryFunction")
        for s in stmts
    )


def test_sender_may_invoke_itself(cfn):
    assert cfn["Resources"]["SenderFunction"]["Properties"]["RecursiveLoop"] == "Allow"


def test_failed_recovery_invocations_land_in_a_dlq(cfn):
    config = _invoke_config(cfn, "RecoveryFunction")
    assert _is_getatt(config["DestinationConfig"]["OnFailure"]["Destination"], "RecoveryFailureDLQ")
    stmts = _statements(_role_of(cfn, "RecoveryFunction"))
    assert any(
        "sqs:SendMessage" in _actions(s) and _is_getatt(s["Resource"], "RecoveryFailureDLQ") for s in stmts
    )


def test_dlqs_are_encrypted_and_keep_messages_14_days(cfn):
    queues = _of_type(cfn, "AWS::SQS::Queue")
    assert set(queues) == {"RecoveryScheduleDLQ", "RecoveryFailureDLQ"}
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


# --- least privilege --------------------------------------------------------------------------


def test_dynamodb_access_is_only_this_table_and_its_indexes(cfn):
    for role_id, role in _of_type(cfn, "AWS::IAM::Role").items():
        for stmt in _statements(role):
            if any(a.startswith("dynamodb:") for a in _actions(stmt)):
                assert all(a.startswith("dynamodb:") and "*" not in a for a in _actions(stmt)), role_id
                assert _listify(stmt["Resource"]) and all(
                    r in TABLE_RESOURCES for r in _listify(stmt["Resource"])
                ), role_id
                # Invariant 9: stuck detection queries the sparse index; nothing scans the table.
                assert "dynamodb:Scan" not in _actions(stmt), role_id
        assert not any(
            "DynamoDB" in arn
            for arn in role["Properties"].get("ManagedPolicyArns", [])
            if isinstance(arn, str)
        ), role_id


def test_each_function_gets_only_the_table_actions_it_needs(cfn):
    actions = {
        fid: {a for s in stmts for a in _actions(s) if a.startswith("dynamodb:")}
        for fid, stmts in _function_statements(cfn).items()
    }
    assert all(actions.values())
    for fid in ("SenderFunction", "RecoveryFunction", "WebhookFunction"):
        assert not actions[fid] & {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}, fid
    assert "dynamodb:PutItem" not in actions["RecoveryFunction"]


def test_secret_is_read_only_by_sender_webhook_and_the_apis_test_sends(cfn):
    readers = set()
    for fid, stmts in _function_statements(cfn).items():
        for stmt in stmts:
            if any(a.startswith("secretsmanager:") for a in _actions(stmt)):
                assert _actions(stmt) == ["secretsmanager:GetSecretValue"], fid
                numbers_own = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}"
                                          ":secret:${AWS::StackName}/*"}
                # The stack's secret; and the numbers' own, under the stack's prefix, by the sender and the API
                # (its test sends go out with the token a send of the campaign would use).
                assert stmt["Resource"] == {"Ref": "WhatsAppSecretArn"} or (
                    fid in ("SenderFunction", "ApiFunction") and stmt["Resource"] == numbers_own), (fid, stmt["Resource"])
                readers.add(fid)
    assert readers == {"SenderFunction", "WebhookFunction", "ApiFunction"}


def test_lambda_invoke_is_only_on_the_sender(cfn):
    invokers = set()
    for fid, stmts in _function_statements(cfn).items():
        for stmt in stmts:
            if "lambda:InvokeFunction" not in _actions(stmt):
                continue
            if fid == "SenderFunction" and _is_getatt(stmt["Resource"], "RecoveryFunction"):
                continue  # the on-failure destination, asserted above
            assert stmt["Resource"] == SENDER_ARN, fid
            invokers.add(fid)
    assert invokers == {"ApiFunction", "RecoveryFunction", "SenderFunction"}


def test_no_wildcard_actions_or_admin_policies(cfn):
    for role_id, role in _of_type(cfn, "AWS::IAM::Role").items():
        for stmt in _statements(role):
            assert not any(a == "*" or a.endswith(":*") for a in _actions(stmt)), role_id
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            assert "FullAccess" not in str(arn) and "Administrator" not in str(arn), role_id


# --- API ----------------------------------------------------------------------------------------


def _api_operations(cfn: dict) -> dict[tuple[str, str], dict]:
    (api,) = _of_type(cfn, "AWS::ApiGateway::RestApi").values()
    return {
        (method.upper(), path): op
        for path, ops in api["Properties"]["Body"]["paths"].items()
        for method, op in ops.items()
    }


def test_every_api_route_requires_iam_and_the_webhook_is_none_of_them(cfn):
    ops = _api_operations(cfn)
    assert set(ops) == API_ROUTES
    assert not {path for _, path in ops} & {path for _, path in WEBHOOK_ROUTES}
    for route, op in ops.items():
        assert op["security"] == [{"AWS_IAM": []}], route
        assert "${ApiFunction.Arn}" in op["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"], route
        # Lambda is invoked through its resource policy, not with the caller's credentials.
        assert "credentials" not in op["x-amazon-apigateway-integration"], route


def test_api_default_authorizer_is_aws_iam_with_no_exception(sam):
    api = sam["Resources"]["Api"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    assert api["StageName"] == {"Ref": "Stage"}
    for fid in FUNCTIONS:
        for name, event in (sam["Resources"][fid]["Properties"].get("Events") or {}).items():
            assert "Auth" not in (event.get("Properties") or {}), f"{fid}.{name}: every route takes the default"
    assert not any(e["Type"] == "Api" for e in (sam["Resources"]["WebhookFunction"]["Properties"].get("Events")
                                                  or {}).values())


def test_the_webhook_is_served_by_its_function_url_public_and_bounded(sam, cfn):
    """Meta calls the webhook function's own URL: no API Gateway in front (no request fee); public,
    since Meta cannot sign AWS requests (the function checks its HMAC signature); and bounded by a
    reserved concurrency, since a function URL has no throttling of its own."""
    (url_id, url), = _of_type(cfn, "AWS::Lambda::Url").items()
    assert url_id == "WebhookFunctionUrl"
    assert url["Properties"]["TargetFunctionArn"] == {"Ref": "WebhookFunction"}
    assert url["Properties"]["AuthType"] == "NONE"
    assert "Cors" not in url["Properties"]  # Meta's servers call it, never a browser
    public = {
        pid: p["Properties"] for pid, p in _of_type(cfn, "AWS::Lambda::Permission").items()
        if p["Properties"]["Principal"] == "*"
    }
    # Exactly the two a URL with AuthType NONE needs: invoke the URL, and invoke the function through it only.
    assert sorted((p["Action"], p.get("FunctionUrlAuthType"), p.get("InvokedViaFunctionUrl"))
                  for p in public.values()) == [("lambda:InvokeFunction", None, True),
                                                ("lambda:InvokeFunctionUrl", "NONE", None)]
    assert all(p["FunctionName"] == {"Ref": "WebhookFunction"} for p in public.values())
    # API Gateway may not invoke the webhook function any more.
    assert not [pid for pid, p in _of_type(cfn, "AWS::Lambda::Permission").items()
                if p["Properties"]["FunctionName"] == {"Ref": "WebhookFunction"}
                and p["Properties"]["Principal"] != "*"]
    assert cfn["Resources"]["WebhookFunction"]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasWebhookReservedConcurrency", {"Ref": "WebhookReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}
    parameter = sam["Parameters"]["WebhookReservedConcurrency"]
    assert int(parameter["Default"]) > 0 and int(parameter["MinValue"]) == 0
    assert sam["Conditions"]["HasWebhookReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WebhookReservedConcurrency"}, 0]}]}
    # Its public URL is the reason for the checkov skip: the reason names the signature check.
    skips = {s["id"]: s["comment"] for s in sam["Resources"]["WebhookFunction"]["Metadata"]["checkov"]["skip"]}
    assert "X-Hub-Signature-256" in skips["CKV_AWS_258"]


# --- alarms and dashboard ----------------------------------------------------------------------


def _alarm_metrics(alarm: dict) -> list[tuple[str, str, dict]]:
    props = alarm["Properties"]
    if "MetricName" in props:
        return [
            (
                props["Namespace"],
                props["MetricName"],
                {d["Name"]: d["Value"] for d in props.get("Dimensions", [])},
            )
        ]
    out = []
    for query in props.get("Metrics", []):
        if "MetricStat" in query:
            m = query["MetricStat"]["Metric"]
            out.append(
                (m["Namespace"], m["MetricName"], {d["Name"]: d["Value"] for d in m.get("Dimensions", [])})
            )
    return out


def _alarms_on(cfn: dict, namespace: str, metric: str) -> list[dict]:
    return [
        a
        for a in _of_type(cfn, "AWS::CloudWatch::Alarm").values()
        if any(ns == namespace and name == metric for ns, name, _ in _alarm_metrics(a))
    ]


def test_every_alarm_notifies_the_topic(cfn):
    alarms = _of_type(cfn, "AWS::CloudWatch::Alarm")
    assert alarms
    for alarm_id, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], alarm_id
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", alarm_id


def test_stuck_shard_alarm(cfn):
    (alarm,) = _alarms_on(cfn, NAMESPACE, Metric.STUCK_SHARDS)
    props = alarm["Properties"]
    assert props["Dimensions"] == [{"Name": "service", "Value": {"Ref": "AWS::StackName"}}]
    assert props["Threshold"] == 0 and props["ComparisonOperator"] == "GreaterThanThreshold"
    assert props["EvaluationPeriods"] == 2 and props.get("DatapointsToAlarm", 2) == 2


def test_campaign_paused_alarm(cfn):
    (alarm,) = _alarms_on(cfn, NAMESPACE, Metric.CAMPAIGNS_PAUSED_FATAL)
    assert alarm["Properties"]["Threshold"] == 0
    assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"


def test_sender_errors_and_dropped_recursion_alarms(cfn):
    errors = [
        a
        for a in _alarms_on(cfn, "AWS/Lambda", "Errors")
        if any(d.get("FunctionName") == {"Ref": "SenderFunction"} for _, _, d in _alarm_metrics(a))
    ]
    assert len(errors) == 1
    (dropped,) = _alarms_on(cfn, "AWS/Lambda", "RecursiveInvocationsDropped")
    watched = {d["FunctionName"]["Ref"] for _, _, d in _alarm_metrics(dropped)}
    assert "SenderFunction" in watched


def test_each_dlq_has_an_alarm(cfn):
    depth = _alarms_on(cfn, "AWS/SQS", "ApproximateNumberOfMessagesVisible")
    watched = {d["QueueName"]["Fn::GetAtt"][0] for a in depth for _, _, d in _alarm_metrics(a)}
    assert watched == set(_of_type(cfn, "AWS::SQS::Queue"))


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(cfn):
    topic = cfn["Resources"]["AlarmTopic"]["Properties"]
    # Not alias/aws/sns: CloudWatch alarms cannot publish to a topic under that key.
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = cfn["Resources"]["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    grants = [
        s
        for s in key["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert grants and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(_actions(grants[0]))
    subscription = cfn["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "AlarmTopic"}


def _dashboard(cfn: dict) -> dict:
    (dashboard,) = _of_type(cfn, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str)
    # ${Resource}, ${Resource.Attr} and ${AWS::Pseudo} become plain placeholders.
    return json.loads(re.sub(r"\$\{([A-Za-z0-9:.]+)\}", r"<\1>", body))


def _dashboard_metrics(dashboard: dict) -> list[tuple[str, str, dict]]:
    found = []
    for widget in dashboard["widgets"]:
        previous: list = []
        for row in widget.get("properties", {}).get("metrics", []):
            if isinstance(row[0], dict):
                expression = row[0]["expression"]
                for schema, name in re.findall(r"SEARCH\('\{([^}]*)\}[^']*?MetricName=\"(\w+)\"", expression):
                    found.append((schema.split(",")[0], name, {"search": schema}))
                continue
            plain = [v for v in row if not isinstance(v, dict)]
            plain = [previous[i] if v == "." else v for i, v in enumerate(plain)]
            previous = plain
            found.append((plain[0], plain[1], dict(zip(plain[2::2], plain[3::2], strict=True))))
    return found


def test_metric_names_in_dashboard_and_alarms_are_the_ones_the_code_emits(cfn):
    used = {name for ns, name, _ in _dashboard_metrics(_dashboard(cfn)) if ns == NAMESPACE}
    for alarm in _of_type(cfn, "AWS::CloudWatch::Alarm").values():
        used |= {name for ns, name, _ in _alarm_metrics(alarm) if ns == NAMESPACE}
    assert used <= Metric.names(), f"unknown metrics: {used - Metric.names()}"
    assert used == Metric.names(), f"metrics on no widget: {Metric.names() - used}"


def test_dashboard_selects_this_stacks_product_metrics(cfn):
    for ns, name, dims in _dashboard_metrics(_dashboard(cfn)):
        if ns != NAMESPACE:
            continue
        if "search" in dims:  # MessagesFailed carries ErrorClass too
            assert dims["search"] == f"{NAMESPACE},ErrorClass,service" and name == Metric.MESSAGES_FAILED
        else:
            assert dims == {"service": "<AWS::StackName>"}, name


def test_dashboard_shows_lambda_dynamodb_and_dlq_health(cfn):
    metrics = _dashboard_metrics(_dashboard(cfn))
    lambda_metrics = {(name, dims.get("FunctionName")) for ns, name, dims in metrics if ns == "AWS/Lambda"}
    for fid in FUNCTIONS:
        for name in ("Errors", "Duration", "Throttles"):
            assert (name, f"<{fid}>") in lambda_metrics, (name, fid)
    assert ("RecursiveInvocationsDropped", "<SenderFunction>") in lambda_metrics
    dynamo = {name for ns, name, _ in metrics if ns == "AWS/DynamoDB"}
    assert {"ThrottledRequests", "UserErrors"} <= dynamo
    queues = {
        dims.get("QueueName") for ns, name, dims in metrics if name == "ApproximateNumberOfMessagesVisible"
    }
    assert queues == {f"<{q}.QueueName>" for q in _of_type(cfn, "AWS::SQS::Queue")}


def test_outputs(cfn):
    assert {"ApiUrl", "WebhookUrl", "DashboardUrl", "TableName", "AlarmTopicArn"} <= set(cfn["Outputs"])
    # Meta's callback URL: the function URL (which ends in "/") and the one path the handler serves.
    assert cfn["Outputs"]["WebhookUrl"]["Value"] == {"Fn::Sub": "${WebhookFunctionUrl.FunctionUrl}webhook"}
    assert cfn["Resources"]["WebhookFunctionUrl"]["Type"] == "AWS::Lambda::Url"


# --- events/ --------------------------------------------------------------------------------------


def _event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def _all_events() -> dict[str, object]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(EVENTS.glob("*.json"))}


def _api_events() -> dict[str, dict]:
    return {name: e for name, e in _all_events().items() if isinstance(e, dict) and "httpMethod" in e}


def _function_url_events() -> dict[str, dict]:
    return {name: e for name, e in _all_events().items() if isinstance(e, dict) and e.get("version") == "2.0"}


def test_every_event_parses():
    names = {p.name for p in EVENTS.glob("*.json")}
    assert {
        "sender.json",
        "recovery-schedule.json",
        "recovery-on-failure.json",
        "webhook-verify.json",
        "webhook-status.json",
    } <= names
    for path in EVENTS.glob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))


def test_api_events_are_rest_proxy_events_for_real_routes():
    events = _api_events()
    covered = set()
    for name, e in events.items():
        for key in (
            "resource",
            "path",
            "httpMethod",
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "pathParameters",
            "requestContext",
            "isBase64Encoded",
            "body",
        ):
            assert key in e, f"{name}: no {key}"
        assert e["body"] is None or isinstance(e["body"], str), name
        assert e["isBase64Encoded"] is False, name
        assert "identity" in e["requestContext"] and e["requestContext"]["resourcePath"] == e["resource"], (
            name
        )
        assert e["requestContext"]["httpMethod"] == e["httpMethod"], name
        params = re.findall(r"\{(\w+)\}", e["resource"])
        assert set(e["pathParameters"] or {}) == set(params), name
        path = e["resource"]
        for param in params:
            path = path.replace("{" + param + "}", e["pathParameters"][param])
        assert e["path"] == path, name
        for header, value in e["headers"].items():
            assert e["multiValueHeaders"][header] == [value], f"{name}: {header}"
        if e["queryStringParameters"]:
            assert e["multiValueQueryStringParameters"] == {
                k: [v] for k, v in e["queryStringParameters"].items()
            }
        if isinstance(e["body"], str) and "Content-Length" in e["headers"]:
            assert e["headers"]["Content-Length"] == str(len(e["body"].encode())), (
                f"{name}: run scripts/sign-event"
            )
        covered.add((e["httpMethod"], e["resource"]))
    assert covered == API_ROUTES, "one sample event per route"


def test_webhook_events_are_function_url_events():
    """Payload format 2.0, as the webhook's function URL passes a request on: lower-cased headers and
    no multi-value fields, no resource or stage; one event per route Meta calls (and an opt-out)."""
    events = _function_url_events()
    assert set(events) == {"webhook-verify.json", "webhook-status.json", "webhook-opt-out.json"}
    covered = set()
    for name, e in events.items():
        assert e["routeKey"] == "$default" and e["requestContext"]["stage"] == "$default", name
        assert {"resource", "httpMethod", "multiValueHeaders", "multiValueQueryStringParameters"}.isdisjoint(e), name
        http = e["requestContext"]["http"]
        assert http["path"] == e["rawPath"] == "/webhook", name
        assert e["requestContext"]["accountId"] == "anonymous"  # AuthType NONE: no caller identity
        assert "authorizer" not in e["requestContext"], name
        assert e["isBase64Encoded"] is False and isinstance(e.get("body", ""), str), name
        assert all(header == header.lower() for header in e["headers"]), name
        assert e["headers"]["host"] == e["requestContext"]["domainName"]
        assert e["requestContext"]["domainName"].endswith(".lambda-url.us-east-1.on.aws"), name
        assert e.get("queryStringParameters", {}) == dict(parse_qsl(e["rawQueryString"])), name
        if "body" in e:
            assert e["headers"]["content-length"] == str(len(e["body"].encode())), f"{name}: run scripts/sign-event"
        covered.add((http["method"], e["rawPath"]))
    assert covered == WEBHOOK_ROUTES


def test_api_event_bodies():
    create = json.loads(_event("api-create-campaign.json")["body"])
    assert create["name"] == "Diwali" and create["rate"] == 80 and create["in_doubt_policy"] == "skip"
    assert create["template"]["name"] == "diwali_offer"
    imported = json.loads(_event("api-import-recipients.json")["body"])
    assert imported == {"recipients": [{"phone": "+919876543210", "variables": ["Asha"]}]}
    csv = _event("api-import-csv.json")
    assert csv["headers"]["Content-Type"].startswith("text/csv") and csv["body"].startswith("phone,")
    assert _event("api-list-recipients.json")["queryStringParameters"] == {"status": "failed"}


def test_sender_and_recovery_events():
    sender = _event("sender.json")
    assert sender == {"campaign_id": "c-demo", "shard": 0, "token": "tok-demo", "hop": 0}
    assert _event("recovery-schedule.json") == {"action": "tick"}
    record = _event("recovery-on-failure.json")
    assert record["requestPayload"] == sender
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert {"errorMessage", "errorType"} <= set(record["responsePayload"])


def test_webhook_verify_event():
    e = _event("webhook-verify.json")
    assert e["requestContext"]["http"]["method"] == "GET" and e["rawPath"] == "/webhook"
    q = e["queryStringParameters"]
    assert (
        q["hub.mode"] == "subscribe" and q["hub.verify_token"] == "test-verify-token" and q["hub.challenge"]
    )
    assert "body" not in e


def test_webhook_status_event_is_signed_with_the_test_app_secret():
    e = _event("webhook-status.json")
    assert e["requestContext"]["http"]["method"] == "POST" and e["rawPath"] == "/webhook"
    expected = "sha256=" + hmac.new(TEST_APP_SECRET.encode(), e["body"].encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(e["headers"]["x-hub-signature-256"], expected), "run scripts/sign-event"
    body = json.loads(e["body"])
    (status,) = body["entry"][0]["changes"][0]["value"]["statuses"]
    assert status["biz_opaque_callback_data"] == "c-demo:0:0"
    assert status["status"] in {"sent", "delivered", "read", "failed"}


def test_webhook_opt_out_event_is_an_inbound_stop_signed_with_the_test_app_secret():
    e = _event("webhook-opt-out.json")
    expected = "sha256=" + hmac.new(TEST_APP_SECRET.encode(), e["body"].encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(e["headers"]["x-hub-signature-256"], expected), "run scripts/sign-event"
    (message,) = json.loads(e["body"])["entry"][0]["changes"][0]["value"]["messages"]
    assert (message["type"], message["text"]["body"], message["from"]) == ("text", "STOP", "919876543210")


def test_sign_event_check_passes_on_the_committed_events():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/sign-event"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- samconfig.toml ---------------------------------------------------------------------------


def _overrides(value) -> dict[str, str]:
    text = " ".join(value) if isinstance(value, list) else value
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', text)}


def test_samconfig_environments(sam):
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    assert {"default", "dev", "prod"} <= set(config)
    stacks = set()
    for env in ("default", "dev", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        stacks.add(config[env]["global"]["parameters"]["stack_name"])
        assert "CAPABILITY_IAM" in _listify(deploy["capabilities"]), env
        assert deploy["resolve_s3"] is True, env
        overrides = _overrides(deploy["parameter_overrides"])
        assert set(overrides) <= set(sam["Parameters"]), env
        assert "WhatsAppSecretArn" not in overrides, f"{env}: the secret ARN is given at deploy time"
        assert overrides.get("Stage") in (None, "dev", "prod"), env
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True
    assert _overrides(config["prod"]["deploy"]["parameters"]["parameter_overrides"])["Stage"] == "prod"
    assert len(stacks) >= 2, "dev and prod are different stacks"


def test_only_items_meant_to_vanish_carry_the_tables_ttl_attribute(sam):
    """DynamoDB deletes an item once its TTL attribute's time has passed: a campaign storing its
    expires_at under that name would be deleted at its expiry."""
    ttl = sam["Resources"]["CampaignsTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"]
    carrying = {name for name, model in vars(models).items()
                if isinstance(model, type) and issubclass(model, pynamodb.models.Model)
                and ttl in {attr.attr_name for attr in model.get_attributes().values()}}
    assert carrying == {"ImportLock", "CampaignEvent"}  # a history kept 90 days
