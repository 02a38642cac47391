"""Helpers shared by the fixtures and the tests: library timeouts, connector config for a worker, starting one."""

from __future__ import annotations

from omni_core.testing import require
from omni_yuanrong.testing import LocalDatasystemWorker, WorkerStartError

#: Short library timeouts so a dead worker shows up in seconds, not the library's 60 s.
CLIENT_TIMEOUTS = {"connect_timeout_ms": 3000, "req_timeout_ms": 3000}


def kv_extra(worker: LocalDatasystemWorker, **overrides: object) -> dict[str, object]:
    """``YuanrongConnector`` config for ``worker`` (gets wait 200 ms for late values)."""
    return {"host": worker.host, "port": worker.port, "get_sub_timeout_ms": 200, **CLIENT_TIMEOUTS, **overrides}


def start_worker(shared_memory_mb: int) -> LocalDatasystemWorker:
    """A worker on loopback with its own metastore (skipped without one; failed under CI=true)."""
    try:
        return LocalDatasystemWorker.start(shared_memory_mb=shared_memory_mb)
    except (WorkerStartError, ImportError, OSError) as exc:
        require(False, f"cannot start a datasystem worker: {exc}")
        raise
