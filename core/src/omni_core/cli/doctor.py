"""``omni doctor``: is this machine ready to move data?"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import platform
import subprocess
import sys

from ..plugins import get_plugin_registry, missing_requirements
from .table import render_table

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


def _shm_row() -> tuple[list[str], bool]:
    try:
        stat = os.statvfs("/dev/shm")
    except OSError as exc:
        return ["/dev/shm", "missing", str(exc)], False
    total, free = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
    ok = free >= MIN_SHM_FREE
    note = "" if ok else f"less than {MIN_SHM_FREE >> 30} GiB free: large payloads will fail"
    return ["/dev/shm", f"{total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free", note], ok


def run(args: argparse.Namespace) -> int:
    rows: list[list[str]] = [["python", platform.python_version(), sys.executable]]
    problems = 0
    registry = get_plugin_registry()
    installed = {r.distribution for r in registry.plugins.values()}
    for label, module, needed_by in BACKENDS:
        ok, detail = _probe_import(module)
        required = any(plugin in installed for plugin in needed_by.split(", "))
        problems += (not ok) and required
        rows.append([label, detail if ok else f"NOT importable: {detail}", f"needed by {needed_by}"])
    for lib, needed_by in SYSTEM_LIBRARIES:
        found = ctypes.util.find_library(lib)
        problems += found is None and needed_by in installed
        hint = "" if found else " (apt-get install libibverbs1 libnuma1)"
        rows.append([f"lib{lib}", found or f"missing{hint}", f"needed by {needed_by}"])
    shm, ok = _shm_row()
    problems += not ok
    rows.append(shm)
    for record in registry.plugins.values():
        if record.status == "broken":
            problems += 1
            rows.append([f"plugin {record.name}", "broken", "; ".join(record.errors)])
        for reg in record.connectors:
            missing = missing_requirements(reg)
            if missing:
                problems += 1
                rows.append([reg.name, f"missing {', '.join(missing)}", reg.install_hint])
    print(render_table(["check", "result", "note"], rows))
    print(f"\n{problems} problem(s) found" if problems else "\nall checks passed")
    return 1 if problems else 0
