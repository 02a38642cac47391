"""Fixtures of the security tests: real servers on loopback, their logs kept out of $HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from secutil import need


def pytest_configure(config: pytest.Config) -> None:
    logs = tempfile.mkdtemp(prefix="omni-security-test-logs-")
    config.stash[_LOGS] = logs
    os.environ.setdefault("DATASYSTEM_CLIENT_LOG_DIR", logs)  # the Yuanrong client logs to ~ otherwise
    os.environ.setdefault("GLOG_log_dir", logs)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_LOGS, ""), ignore_errors=True)


_LOGS = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def yuanrong_worker() -> Iterator[object]:
    """One small datasystem worker (128 MiB of shared memory) for the session."""
    from omni_yuanrong.testing import LocalDatasystemWorker, WorkerStartError

    try:
        worker = LocalDatasystemWorker.start(shared_memory_mb=128)
    except (WorkerStartError, ImportError, OSError) as exc:
        need(False, f"cannot start a Yuanrong datasystem worker: {exc}")
        raise
    yield worker
    worker.stop()


@pytest.fixture
def te_sender() -> Iterator[object]:
    """A Yuanrong TransferEngine sender with the real engine and a 1 MiB host pool, on 127.0.0.1."""
    from omni_yuanrong.te_connector import YuanrongTransferEngineConnector
    from omni_yuanrong.te_engine import real_engine

    config = {"role": "sender", "host": "127.0.0.1", "memory_pool_device": "cpu", "memory_pool_size": 1 << 20,
              "device_name": "npu:0"}
    with YuanrongTransferEngineConnector(config, engine_factory=real_engine) as sender:
        yield sender
