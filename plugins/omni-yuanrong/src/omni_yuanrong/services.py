"""``omni services up yuanrong``: a local datasystem worker for trying the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .testing import LocalDatasystemWorker


def start_worker(state_dir: Path) -> dict[str, Any]:
    """Start a detached worker (own metastore, 127.0.0.1, free ports); return how to reach and stop it."""
    worker = LocalDatasystemWorker.start()
    return {
        "pid": worker.pid,
        "workdir": str(worker.workdir),
        "env": {"OMNI_YR_PORT": str(worker.port)},
        "hint": f"openYuanrong datasystem worker at {worker.endpoint}; examples read its port from "
        f"OMNI_YR_PORT:\n  export OMNI_YR_PORT={worker.port}",
    }
