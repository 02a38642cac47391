"""kv_connector_extra_config: a ConnectorSpec validated against the connector's keys; errors name the key."""

from __future__ import annotations

import json

import pytest

from omni_core import ConfigError, ConnectorSpec
from omni_vllm.cli import main as vllm_kv
from omni_vllm.config import parse_settings

SHM = {"name": "SharedMemoryConnector", "extra": {"namespace": "pd"}}


def test_settings_defaults_and_the_spec():
    settings = parse_settings({"omni_connector": SHM})
    assert settings.connector == ConnectorSpec("SharedMemoryConnector", {"namespace": "pd"})
    assert (settings.namespace, settings.from_stage, settings.to_stage) == ("omni", "0", "1")
    assert parse_settings({"omni_connector": SHM, "namespace": "a_b", "load_timeout_s": 2}).load_timeout_s == 2.0


def test_connector_extra_is_checked_against_the_declared_keys():
    with pytest.raises(ConfigError, match=r"omni_connector'\]\['extra'\]: unknown key 'namesapce'.*valid keys"):
        parse_settings({"omni_connector": {"name": "SharedMemoryConnector", "extra": {"namesapce": "pd"}}})
    with pytest.raises(ConfigError, match=r"key 'readers' must be int"):
        parse_settings({"omni_connector": {"name": "SharedMemoryConnector", "extra": {"readers": "two"}}})


@pytest.mark.parametrize(
    ("extra_config", "message"),
    [
        ({}, "key 'omni_connector' is required"),
        ({"omni_connector": SHM, "namepsace": "x"}, "unknown key 'namepsace' for OmniKVConnector"),
        ({"omni_connector": SHM, "namespace": "a-b"}, "key 'namespace' must be 1-32 characters"),
        ({"omni_connector": SHM, "load_timeout_s": 0}, "key 'load_timeout_s' must be > 0"),
        ({"omni_connector": SHM, "from_stage": "prefill"}, "key 'from_stage' must be a stage id"),
        ({"omni_connector": {"name": "NoSuchConnector"}}, "key 'name': unknown connector 'NoSuchConnector'"),
        ({"omni_connector": {"name": "SharedMemoryConnector", "extras": {}}}, "unknown key 'extras'"),
        ({"omni_connector": "SharedMemoryConnector"}, "must be a mapping"),
    ],
)
def test_bad_settings_name_the_key(extra_config, message):
    with pytest.raises(ConfigError, match=message):
        parse_settings(extra_config)


def test_omni_vllm_kv_checks_a_kv_transfer_config(capsys, tmp_path):
    config = {"kv_connector": "OmniKVConnector", "kv_role": "kv_consumer", "kv_connector_extra_config":
              {"omni_connector": SHM}}  # fmt: skip
    assert vllm_kv([json.dumps(config)]) == 0
    out = capsys.readouterr().out
    assert "kv_consumer over SharedMemoryConnector" in out and "kv_load_failure_policy" in out
    path = tmp_path / "kv.json"
    path.write_text(json.dumps({**config, "kv_role": "kv_sender"}))
    assert vllm_kv([str(path)]) == 1
    assert "key 'kv_role' must be one of kv_producer, kv_consumer, kv_both" in capsys.readouterr().err
