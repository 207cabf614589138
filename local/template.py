"""Read the SAM template so local tools build what the deployed stack builds.

template.yaml is the one place that defines the table (keys, indexes) and the
functions (handlers, timeouts, environment, on-failure destinations). Tests, the
local stack and the benchmarks derive their table and their local Lambda
functions from it instead of restating them, so the two cannot drift apart.

CloudFormation short tags (!Ref, !GetAtt, !Sub, !If, ...) are not YAML that a
plain loader accepts; `load_template` turns each into the long form CloudFormation
itself uses (`{"Ref": x}`, `{"Fn::GetAtt": [resource, attribute]}`, `{"Fn::Sub": x}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"

# What Lambda uses when neither the function nor Globals set a value.
LAMBDA_DEFAULT_TIMEOUT_SECONDS = 3
LAMBDA_DEFAULT_MEMORY_MB = 128
LAMBDA_DEFAULT_ASYNC_RETRIES = 2


class CloudFormationLoader(yaml.SafeLoader):
    """A SafeLoader that understands CloudFormation's `!Tag` shorthand."""


def _construct_intrinsic(loader: CloudFormationLoader, tag_suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # `!GetAtt Resource.Attr` is shorthand for `Fn::GetAtt: [Resource, Attr]`.
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


@dataclass(frozen=True)
class FunctionSpec:
    """One AWS::Serverless::Function, as much of it as running it locally needs."""

    logical_id: str
    # Relative to the template's directory, e.g. functions/sender/app.py.
    handler_path: Path
    handler_attr: str
    timeout_seconds: float
    memory_mb: int
    # Names only: values are often !Ref/!Sub that only CloudFormation can resolve.
    environment: tuple[str, ...]
    # Logical id of the function that receives the on-failure destination record, if any.
    on_failure: str | None
    maximum_retry_attempts: int


def load_template(path: str | Path | None = None) -> dict:
    """Parse a SAM template (default: template.yaml at the repository root)."""
    with open(path or DEFAULT_TEMPLATE, encoding="utf-8") as stream:
        # Safe: CloudFormationLoader is a SafeLoader that only adds the intrinsic-function tags.
        return yaml.load(stream, Loader=CloudFormationLoader)


def resources_of_type(template: dict, resource_type: str) -> dict[str, dict]:
    """Logical id → resource, for every resource of one CloudFormation type."""
    return {
        logical_id: resource
        for logical_id, resource in (template.get("Resources") or {}).items()
        if resource.get("Type") == resource_type
    }


def table_definition(template: dict, table_name: str) -> dict:
    """Keyword arguments for boto3 `create_table`, from the template's one DynamoDB table."""
    tables = resources_of_type(template, "AWS::DynamoDB::Table")
    if len(tables) != 1:
        raise ValueError(f"expected exactly one AWS::DynamoDB::Table, found {sorted(tables)}")
    properties = next(iter(tables.values()))["Properties"]
    definition = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        # On-demand locally whatever the template says: nobody wants to tune capacity for tests.
        "BillingMode": "PAY_PER_REQUEST",
    }
    for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        indexes = properties.get(index_kind)
        if indexes:
            definition[index_kind] = [_index_definition(index) for index in indexes]
    return definition


def _index_definition(index: dict) -> dict:
    # Provisioned throughput is incompatible with PAY_PER_REQUEST, so only the shape is kept.
    return {
        "IndexName": index["IndexName"],
        "KeySchema": index["KeySchema"],
        "Projection": index.get("Projection", {"ProjectionType": "ALL"}),
    }


def functions(template: dict) -> dict[str, FunctionSpec]:
    """Logical id → FunctionSpec for every AWS::Serverless::Function in the template."""
    function_resources = resources_of_type(template, "AWS::Serverless::Function")
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    return {
        logical_id: _function_spec(template, logical_id, resource.get("Properties") or {}, globals_)
        for logical_id, resource in function_resources.items()
    }


def _function_spec(template: dict, logical_id: str, properties: dict, globals_: dict) -> FunctionSpec:
    def setting(key: str, default: Any = None) -> Any:
        return properties.get(key, globals_.get(key, default))

    def number(key: str, default: int) -> float:
        return _resolve_number(template, f"{logical_id}.{key}", setting(key, default))

    handler = setting("Handler")
    code_uri = setting("CodeUri", ".")
    if not isinstance(handler, str) or "." not in handler:
        raise ValueError(f"{logical_id}: Handler must look like module.function, got {handler!r}")
    if not isinstance(code_uri, str):
        raise ValueError(f"{logical_id}: only a local CodeUri directory is supported, got {code_uri!r}")
    module, handler_attr = handler.rsplit(".", 1)
    async_config = properties.get("EventInvokeConfig") or {}
    return FunctionSpec(
        logical_id=logical_id,
        handler_path=Path(code_uri) / (module.replace(".", "/") + ".py"),
        handler_attr=handler_attr,
        timeout_seconds=number("Timeout", LAMBDA_DEFAULT_TIMEOUT_SECONDS),
        memory_mb=int(number("MemorySize", LAMBDA_DEFAULT_MEMORY_MB)),
        environment=_environment_names(globals_, properties),
        on_failure=_on_failure_function(
            async_config, resources_of_type(template, "AWS::Serverless::Function")
        ),
        maximum_retry_attempts=int(
            _resolve_number(
                template,
                f"{logical_id}.EventInvokeConfig.MaximumRetryAttempts",
                async_config.get("MaximumRetryAttempts", LAMBDA_DEFAULT_ASYNC_RETRIES),
            )
        ),
    )


def function_urls(template: dict) -> dict[str, dict]:
    """Logical id → FunctionUrlConfig, for every function the template gives a Lambda function URL."""
    return {
        logical_id: dict(config)
        for logical_id, resource in resources_of_type(template, "AWS::Serverless::Function").items()
        if isinstance(config := (resource.get("Properties") or {}).get("FunctionUrlConfig"), dict)
    }


def _resolve_number(template: dict, where: str, value: Any) -> float:
    """A number, or a !Ref to a parameter whose Default is one (other intrinsics need CloudFormation)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = (template.get("Parameters") or {}).get(value["Ref"]) or {}
        value = parameter.get("Default", value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}: cannot resolve {value!r} to a number locally")
    number = float(value)
    return int(number) if number.is_integer() else number


def _environment_names(globals_: dict, properties: dict) -> tuple[str, ...]:
    names: dict[str, None] = {}  # an ordered set: Globals first, then the function's own
    for source in (globals_, properties):
        names.update(dict.fromkeys((source.get("Environment") or {}).get("Variables") or {}))
    return tuple(names)


def _on_failure_function(async_config: dict, all_functions: dict) -> str | None:
    """The logical id behind `OnFailure.Destination: !GetAtt X.Arn` when X is a function here."""
    on_failure = (async_config.get("DestinationConfig") or {}).get("OnFailure") or {}
    destination = on_failure.get("Destination")
    if not isinstance(destination, dict):
        return None
    target = destination.get("Fn::GetAtt")
    if isinstance(target, list) and len(target) == 2 and target[1] == "Arn" and target[0] in all_functions:
        return target[0]
    return None
