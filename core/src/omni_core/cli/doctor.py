"""``omni doctor``: is this machine ready to move data?"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import platform
import subprocess
import sys
from typing import Any

from ..plugins import get_plugin_registry, missing_requirements
from .table import print_table

#: (label, module to import, which plugin needs it)
BACKENDS = (
    ("torch", "torch", "tensors (optional)"),
    ("numpy", "numpy", "ndarrays (optional)"),
    ("pyzmq", "zmq", "omni-mooncake, omni-yuanrong, omni-coordinator"),
    ("mooncake engine", "mooncake.engine", "omni-mooncake"),
    ("mooncake store", "mooncake.store", "omni-mooncake"),
    ("openYuanrong datasystem", "yr.datasystem", "omni-yuanrong"),
)
SYSTEM_LIBRARIES = (("ibverbs", "omni-mooncake"), ("numa", "omni-mooncake"))
MIN_SHM_FREE = 1 << 30


def _probe_import(module: str) -> tuple[bool, str]:
    """Import ``module`` in a child process (a broken native wheel must not crash the doctor)."""
    code = f"import {module} as m; print(getattr(m, '__version__', '') or 'ok')"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False, "import timed out"
    if done.returncode == 0:
        return True, done.stdout.strip() or "ok"
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return False, last


def _shm_check() -> dict[str, Any]:
    try:
        stat = os.statvfs("/dev/shm")
    except OSError as exc:
        return _check("/dev/shm", False, "missing", str(exc))
    total, free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    ok = free >= MIN_SHM_FREE
    note = "" if ok else f"less than {MIN_SHM_FREE >> 30} GiB free: large payloads will fail"
    return _check("/dev/shm", ok, f"{total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free", note)


def _check(name: str, ok: bool, result: str, note: str, problem: bool | None = None) -> dict[str, Any]:
    """One row: ``ok`` is what was found; ``problem`` (default: not ok) whether it counts against this machine."""
    return {"check": name, "ok": ok, "problem": (not ok) if problem is None else problem, "result": result,
            "note": note}


def checks() -> list[dict[str, Any]]:
    """Every check ``omni doctor`` makes (the rows of its table, the ``checks`` of its JSON document)."""
    found = [_check("python", True, platform.python_version(), sys.executable)]
    registry = get_plugin_registry()
    installed = {r.distribution for r in registry.plugins.values()}
    for label, module, needed_by in BACKENDS:
        ok, detail = _probe_import(module)
        required = any(plugin in installed for plugin in needed_by.split(", "))
        found.append(_check(label, ok, detail if ok else f"NOT importable: {detail}", f"needed by {needed_by}",
                            problem=not ok and required))
    for lib, needed_by in SYSTEM_LIBRARIES:
        path = ctypes.util.find_library(lib)
        hint = "" if path else " (apt-get install libibverbs1 libnuma1)"
        found.append(_check(f"lib{lib}", path is not None, path or f"missing{hint}", f"needed by {needed_by}",
                            problem=path is None and needed_by in installed))
    found.append(_shm_check())
    for record in registry.plugins.values():
        if record.status == "broken":
            found.append(_check(f"plugin {record.name}", False, "broken", "; ".join(record.errors)))
        for reg in record.connectors:
            missing = missing_requirements(reg)
            if missing:
                found.append(_check(reg.name, False, f"missing {', '.join(missing)}", reg.install_hint))
    return found


def run(args: argparse.Namespace) -> int:
    found = checks()
    problems = sum(c["problem"] for c in found)
    if getattr(args, "json", False):
        print(json.dumps({"checks": found, "problems": problems}, indent=2))
    else:
        print_table(["check", "result", "note"], [[c["check"], c["result"], c["note"]] for c in found])
        print(f"\n{problems} problem(s) found" if problems else "\nall checks passed")
    return 1 if problems else 0
