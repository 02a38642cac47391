"""The plugin registers OmniKVConnector with vLLM itself, in any vLLM process, any number of times."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from conftest import have_vllm

from omni_core.testing import HEAVY_MODULES

CHECK = """
import json
from vllm.config import KVTransferConfig
from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
from vllm.plugins import load_general_plugins

load_general_plugins()  # what every vLLM process does first
import omni_vllm
omni_vllm.register()  # a second registration changes nothing
by_name = KVConnectorFactory.get_connector_class(KVTransferConfig(kv_connector="OmniKVConnector", kv_role="kv_both"))
by_path = KVConnectorFactory.get_connector_class(
    KVTransferConfig(kv_connector="OmniKVConnector", kv_connector_module_path="omni_vllm", kv_role="kv_both"))
print(json.dumps([by_name.__module__, by_name is by_path, by_name is omni_vllm.OmniKVConnector]))
"""


def test_entry_point_is_published():
    [ep] = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "omni_kv_connector"]
    assert ep.value == "omni_vllm.registration:register"


def test_vllm_finds_the_connector_by_name_and_by_module_path():
    have_vllm()
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["omni_vllm.connector", True, True]


def test_importing_the_package_loads_nothing_heavy():
    code = f"import json, sys, omni_vllm; print(json.dumps(sorted(set(sys.modules) & {set(HEAVY_MODULES)!r})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("name", ["OmniKVConnector", "StageKVPipe", "register", "parse_settings", "KVSettings"])
def test_public_names(name):
    import omni_vllm

    assert name in omni_vllm.__all__ and name in dir(omni_vllm)
