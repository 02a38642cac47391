"""Core is the contract: no module of ``omni_core`` imports a plugin package (plugins reach core, never the reverse).

Core reaches a plugin only through registrations and hooks; this scans every import statement in
``core/src`` (AST, so a string naming a plugin, as in an install hint, is fine).
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE_SRC = Path(__file__).resolve().parents[1] / "src"


def _plugin_imports(path: Path, root: Path = CORE_SRC) -> list[str]:
    """``file:line: import X`` for every import of a top-level ``omni_*`` package other than ``omni_core``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top.startswith("omni_") and top != "omni_core":
                found.append(f"{path.relative_to(root)}:{node.lineno}: import {name}")
    return found


def test_no_core_module_imports_a_plugin() -> None:
    sources = sorted(CORE_SRC.rglob("*.py"))
    assert len(sources) > 20, "every core module was scanned"
    violations = [v for path in sources for v in _plugin_imports(path)]
    assert violations == [], violations


def test_the_scan_finds_a_plugin_import(tmp_path) -> None:
    """The scan is not vacuous: each spelling of a plugin import is caught, core's own imports are not."""
    module = tmp_path / "probe.py"
    module.write_text("import omni_core.base\nimport omni_coordinator\nfrom omni_pipeline.stage import x\n"
                      "from .base import y\nif True:\n    import omni_ray as ray\n")
    found = _plugin_imports(module, tmp_path)
    assert [line.split(": ", 1)[1] for line in found] == [
        "import omni_coordinator", "import omni_pipeline.stage", "import omni_ray"]
