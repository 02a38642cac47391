"""Helpers for tests that run ``omni run`` (this distribution's own and cross-package ones).

``omni_run(...)`` runs the command in a child process and fails the test if a stage replica or a coordinator
outlives it; ``edge_rows`` and ``replica_rows`` read the tables it prints.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Command-line fragments of the processes an ``omni run`` starts.
RUN_PROCESSES = (b"omni_pipeline.stage", b"omni_coordinator.cli")
#: The variable marking the processes of one ``omni run`` a test started (children inherit it), so that processes
#: other runs on the machine start are never mistaken for them.
MARKER_ENV = "OMNI_TEST_RUN"


def run_processes(marker: str | None = None) -> list[int]:
    """PIDs of live stage replicas or coordinators of ``omni run`` (scanned from /proc); with ``marker``, only
    those of the run whose environment holds ``OMNI_TEST_RUN=marker``."""
    tag = f"{MARKER_ENV}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if not any(fragment in cmdline for fragment in RUN_PROCESSES):
                continue
            if marker is None or tag in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def marked_env(env: Mapping[str, str] | None = None) -> tuple[dict[str, str], str]:
    """``env`` (default: this process's) with a fresh :data:`MARKER_ENV`, and the marker."""
    marker = uuid.uuid4().hex
    return {**(os.environ if env is None else env), MARKER_ENV: marker}, marker


def omni_run(
    *args: str, timeout: float = 300, env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``omni run --no-progress ARGS`` (under the command ``prefix``, if any); asserts nothing it started survives."""
    run_env, marker = marked_env(env)
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "omni_core.cli.main", "run", "--no-progress", *args],
        capture_output=True, text=True, timeout=timeout, env=run_env,
    )
    survivors = run_processes(marker)
    assert not survivors, f"stage replicas or coordinators outlived omni run: {survivors}"
    return done


def edge_rows(stdout: str) -> dict[str, list[str]]:
    """``{"0 -> 1": [requests, bytes, unit, p50, p99, GB/s]}`` from the per-edge table."""
    return {m.group(1): m.group(2).split() for m in re.finditer(r"^(\d+ -> \d+)\s+(.*)$", stdout, re.M)}


def replica_rows(stdout: str) -> dict[str, tuple[str, int]]:
    """``{"stage 1 replica 0": (host, requests handled)}`` from the replica table."""
    rows = re.finditer(r"^(stage \d+ replica \d+)\s+(.+?)\s+(\d+)$", stdout, re.M)
    return {m.group(1): (m.group(2), int(m.group(3))) for m in rows}
