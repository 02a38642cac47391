"""Helpers shared by the fixtures and the tests: library timeouts and connector config for a worker."""

from __future__ import annotations

from omni_yuanrong.testing import LocalDatasystemWorker

#: Short library timeouts so a dead worker shows up in seconds, not the library's 60 s.
CLIENT_TIMEOUTS = {"connect_timeout_ms": 3000, "req_timeout_ms": 3000}


def kv_extra(worker: LocalDatasystemWorker, **overrides: object) -> dict[str, object]:
    """``YuanrongConnector`` config for ``worker`` (gets wait 200 ms for late values)."""
    return {"host": worker.host, "port": worker.port, "get_sub_timeout_ms": 200, **CLIENT_TIMEOUTS, **overrides}
