"""Fixtures of the security tests: real servers on loopback, their logs kept out of $HOME."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from secutil import mooncake_te

from omni_core.testing import require


def pytest_configure(config: pytest.Config) -> None:
    _load_mooncake_first()
    logs = tempfile.mkdtemp(prefix="omni-security-test-logs-")
    config.stash[_LOGS] = logs
    os.environ.setdefault("DATASYSTEM_CLIENT_LOG_DIR", logs)  # the Yuanrong client logs to ~ otherwise
    os.environ.setdefault("GLOG_log_dir", logs)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_LOGS, ""), ignore_errors=True)


_LOGS = pytest.StashKey[str]()


def _load_mooncake_first() -> None:
    """Mooncake's bindings crash (SIGSEGV) when openYuanrong's were loaded first in the same process (found by the
    reliability campaign, reported): these tests use both, so Mooncake's are loaded before anything else."""
    try:
        importlib.import_module("mooncake.engine")
        importlib.import_module("mooncake.store")
    except ImportError:
        pass  # the Mooncake tests then fail (CI) or skip, naming the missing wheel


@pytest.fixture(scope="session")
def yuanrong_worker() -> Iterator[object]:
    """One small datasystem worker (128 MiB of shared memory) for the session."""
    from omni_yuanrong.testing import LocalDatasystemWorker, WorkerStartError

    try:
        worker = LocalDatasystemWorker.start(shared_memory_mb=128)
    except (WorkerStartError, ImportError, OSError) as exc:
        require(False, f"cannot start a Yuanrong datasystem worker: {exc}")
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


@pytest.fixture(scope="session")
def mooncake_master() -> Iterator[object]:
    """A ``mooncake_master`` on loopback (the plugin's launcher) for the session."""
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
    try:
        from omni_mooncake.master import MooncakeMaster

        master = MooncakeMaster().start()
    except (ImportError, FileNotFoundError, RuntimeError) as exc:
        require(False, f"cannot start a Mooncake master: {exc}")
        raise
    yield master
    master.stop()


@pytest.fixture
def mooncake_sender() -> Iterator[object]:
    """A Mooncake TransferEngine sender over TCP on 127.0.0.1 with a 4 MiB pool."""
    with mooncake_te("sender", zmq_port=0) as sender:
        yield sender
