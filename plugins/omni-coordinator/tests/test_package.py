"""Package surface: the entry point stays light, every exported name resolves."""

from __future__ import annotations

import subprocess
import sys

import omni_coordinator


def test_entry_point_module_imports_no_zmq() -> None:
    code = "import sys, omni_coordinator.hooks; print('zmq' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_every_exported_name_resolves() -> None:
    missing = [name for name in omni_coordinator.__all__ if getattr(omni_coordinator, name, None) is None]
    assert missing == []
    assert set(omni_coordinator.__all__) == {*omni_coordinator._LAZY, "__version__"}
