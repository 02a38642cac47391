"""Shared fixtures: real datasystem workers on loopback, logs kept out of $HOME, and the CI rule.

Under ``CI=true`` a test that cannot reach a backend it needs fails; elsewhere it is skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from worker_support import kv_extra, start_worker

from omni_core import ConnectorSpec
from omni_yuanrong.testing import LocalDatasystemWorker


def pytest_configure(config: pytest.Config) -> None:
    logs = tempfile.mkdtemp(prefix="omni-yuanrong-test-logs-")
    config.stash[_LOGS] = logs
    os.environ["DATASYSTEM_CLIENT_LOG_DIR"] = logs  # client logs otherwise go to ~/.datasystem/logs
    os.environ["GLOG_log_dir"] = logs  # TransferEngine logs otherwise go to /tmp


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_LOGS, ""), ignore_errors=True)


_LOGS = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def datasystem_worker() -> Iterator[LocalDatasystemWorker]:
    """One worker for the whole session (start-up takes about 6 s)."""
    worker = start_worker(shared_memory_mb=1024)
    yield worker
    worker.stop()


@pytest.fixture
def disposable_worker() -> Iterator[LocalDatasystemWorker]:
    """A worker of the test's own, for tests that kill it."""
    worker = start_worker(shared_memory_mb=256)
    yield worker
    worker.stop()


@pytest.fixture
def kv_spec(datasystem_worker: LocalDatasystemWorker) -> ConnectorSpec:
    return ConnectorSpec("YuanrongConnector", kv_extra(datasystem_worker))
