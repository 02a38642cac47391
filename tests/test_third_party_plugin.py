"""A third-party plugin, pip-installed, is discovered, created by name and passes the kit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.plugins import get_plugin_registry
from omni_core.testing import ConnectorConformanceTests


class TestDropboxConformance(ConnectorConformanceTests):
    """The dummy DropboxConnector, exactly as a third-party author would run the kit."""

    @pytest.fixture
    def connector_spec(self, tmp_path) -> ConnectorSpec:
        return ConnectorSpec("DropboxConnector", {"root": str(tmp_path / "drop")})


def test_discovered_through_its_entry_point() -> None:
    record = get_plugin_registry().plugins["dropbox"]
    assert (record.distribution, record.version, record.status) == ("omni-dummy-dropbox", "0.0.1", "loaded")
    assert "DropboxConnector" in OmniConnectorFactory.list_registered_connectors()


def test_broken_plugin_is_reported_and_the_rest_still_work() -> None:
    registry = get_plugin_registry()
    broken = registry.plugins["broken"]
    assert broken.status == "broken" and "broken on purpose" in broken.errors[0]
    assert {"SharedMemoryConnector", "DropboxConnector"} <= set(registry.connector_names())


def _omni(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omni_core.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_omni_plugins_lists_broken_plugin_and_exits_1() -> None:
    done = _omni("plugins")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.startswith("broken ") and "broken on purpose" in line for line in lines)
    assert any("DropboxConnector" in line and line.rstrip().endswith("loaded") for line in lines)
    assert any("SharedMemoryConnector" in line for line in lines)


def test_disabling_the_broken_plugin_makes_plugins_clean() -> None:
    done = _omni("plugins", OMNI_DISABLED_PLUGINS="broken,mooncake,yuanrong")
    assert "disabled" in done.stdout
    assert "broken on purpose" not in done.stdout


def test_allow_list_with_unknown_name_warns() -> None:
    done = _omni("plugins", OMNI_PLUGINS="dropbox,does-not-exist")
    assert "does-not-exist" in done.stderr
    assert "DropboxConnector" in done.stdout and "SharedMemoryConnector" not in done.stdout


def test_import_omni_core_is_light() -> None:
    code = (
        "import sys, omni_core\n"
        "omni_core.OmniConnectorBase; omni_core.ConnectorSpec; omni_core.load_omni_transfer_config\n"
        "omni_core.OmniConnectorFactory; omni_core.serialize_obj({'a': 1})\n"
        "import omni_core.plugins as p\n"
        "heavy = [m for m in ('torch', 'zmq', 'numpy', 'mooncake', 'yr') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'scanned': p._registry is not None}))\n"
    )
    done = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"heavy": [], "scanned": False}
