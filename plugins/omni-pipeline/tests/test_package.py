"""Package surface: a light entry point, names that resolve, and imports of omni_core's public names only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import omni_pipeline

import omni_core
from omni_core import get_plugin_registry

SOURCES = Path(omni_pipeline.__file__).parent


def test_entry_point_module_loads_nothing_heavy() -> None:
    code = "import json, sys, omni_pipeline.hooks; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    assert not loaded & {"torch", "numpy", "zmq", "yaml", "omni_coordinator"}


def test_every_exported_name_resolves() -> None:
    assert [name for name in omni_pipeline.__all__ if getattr(omni_pipeline, name, None) is None] == []
    assert set(omni_pipeline.__all__) == {*omni_pipeline._LAZY, "__version__"}


def test_it_registers_its_commands_and_the_local_launcher() -> None:
    record = get_plugin_registry().plugins["pipeline"]
    assert record.status == "loaded" and record.distribution == "omni-pipeline"
    assert sorted(c.name for c in record.cli_commands) == ["bench", "run", "services"]
    assert [(launcher.name, launcher.placement_keys) for launcher in record.launchers] == [("local", ("host",))]


def test_it_imports_only_public_names_of_omni_core_and_no_other_plugin() -> None:
    """Another plugin (the coordinator) is reached through registrations, never imported."""
    faults = []
    for path in sorted(SOURCES.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("omni_"):
                if node.module != "omni_core":
                    faults.append(f"{path.name}: from {node.module} import ...")
                faults += [f"{path.name}: omni_core.{a.name} is not public" for a in node.names
                           if node.module == "omni_core" and a.name not in omni_core.__all__]
            elif isinstance(node, ast.Import):
                faults += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("omni_")]
    assert faults == []
