"""openapi.json is generated from the API's routes (scripts/openapi) and must not go stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from functions.api.app import openapi_schema
from local.template import load_template

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "openapi.json"
METHODS = {"get", "post", "put", "patch", "delete"}


def test_checked_in_schema_is_current():
    assert SCHEMA_FILE.exists(), "openapi.json is missing: run .venv/bin/python scripts/openapi"
    assert json.loads(SCHEMA_FILE.read_text()) == openapi_schema(), (
        "openapi.json is stale: run .venv/bin/python scripts/openapi")


def test_script_check_agrees_byte_for_byte():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "openapi"), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _template_routes(function: str) -> set[tuple[str, str]]:
    events = load_template()["Resources"][function]["Properties"]["Events"]
    return {(e["Properties"]["Method"].lower(), e["Properties"]["Path"]) for e in events.values()
            if e["Type"] == "Api"}


def test_schema_documents_exactly_the_deployed_api_routes():
    documented = {(method, path) for path, item in openapi_schema()["paths"].items()
                  for method in item if method in METHODS}
    deployed = _template_routes("ApiFunction") - {("get", "/openapi.json")}
    assert documented == deployed


def test_every_operation_documents_its_errors_with_the_error_shape():
    schema = openapi_schema()
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            errors = {code: answer for code, answer in operation["responses"].items() if code.startswith("4")}
            assert errors, f"{method.upper()} {path} documents no error answer"
            for code, answer in errors.items():
                assert answer["content"]["application/json"]["schema"] == error_ref, (method, path, code)


def test_import_route_takes_json_and_csv():
    body = openapi_schema()["paths"]["/campaigns/{id}/recipients"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "text/csv"}
    assert "ImportRequest" in openapi_schema()["components"]["schemas"]
