"""Settings (campaigns/config.py): parsed from the environment once per process, re-read only on
config.reload(); the models read the table name when first used."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields

import pytest

from campaigns import config
from campaigns.config import Settings, env_names
from campaigns.models import Campaign, Recipient
from local.runtime import PER_INVOCATION_ENV


def test_the_environment_is_parsed_once_and_again_only_on_reload(set_env, monkeypatch):
    first = config.settings()
    assert config.settings() is first
    monkeypatch.setenv("MAX_ATTEMPTS", "9")
    assert config.settings() is first  # a warm process keeps what its cold start read
    assert config.reload().max_attempts == 9
    assert config.settings() is config.settings()


def test_a_bad_value_is_refused_with_its_variable():
    with pytest.raises(ValueError, match="LEASE_SECONDS='abc': not a float"):
        Settings.from_env({"LEASE_SECONDS": "abc"})
    with pytest.raises(ValueError, match="MAX_IN_FLIGHT='1.5': not an int"):
        Settings.from_env({"MAX_IN_FLIGHT": "1.5"})
    with pytest.raises(ValueError, match="LEASE_SECONDS=10.0 leaves"):
        Settings.from_env({"LEASE_SECONDS": "10"})
    # Unset or empty: the default.
    assert Settings.from_env({"MAX_IN_FLIGHT": ""}) == Settings()
    assert Settings.from_env({"LEASE_SECONDS": "30", "SHARD_RATE": "40"}) == Settings(lease_seconds=30, shard_rate=40)


def test_the_region_is_aws_region_else_aws_default_region():
    assert Settings.from_env({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-west-2"}).aws_region == "eu-west-1"
    assert Settings.from_env({"AWS_DEFAULT_REGION": "us-west-2"}).aws_region == "us-west-2"
    assert Settings.from_env({}).aws_region == "us-east-1"


def test_no_variable_a_warm_environment_gets_per_invocation_is_a_setting():
    names = {name for f in fields(Settings) for name in env_names(f)}
    assert not names & set(PER_INVOCATION_ENV)


def test_the_models_follow_the_table_name_settings_give(set_env):
    assert Campaign._get_connection().table_name == config.settings().table_name
    set_env(TABLE_NAME="another-table", MAX_IN_FLIGHT="3")
    assert Campaign._get_connection().table_name == "another-table"
    assert Recipient._get_connection().table_name == "another-table"
    assert Campaign.Meta.max_pool_connections == 3 + 4


def test_the_models_import_before_the_table_name_is_set():
    code = (
        "import os\n"
        "from campaigns.models import Campaign\n"
        "os.environ['TABLE_NAME'] = 'set-after-import'\n"
        "print(Campaign._get_connection().table_name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TABLE_NAME"}
    env["PYTHONPATH"] = os.pathsep.join(["layers/common/python", env.get("PYTHONPATH", "")])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "set-after-import"
