"""Fixtures: one real ``mooncake_master`` per session (loopback, free ports, 200 ms leases)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest

from omni_core.testing import require
from omni_mooncake.master import INSTALL, MooncakeMaster

os.environ.setdefault("MC_LOG_LEVEL", "ERROR")  # children inherit it


def _mooncake_importable() -> str | None:
    try:
        for module in ("mooncake.store", "mooncake.engine"):
            importlib.import_module(module)
    except ImportError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def mooncake_available() -> None:
    problem = _mooncake_importable()
    require(problem is None, f"the Mooncake wheel does not import ({problem}): {INSTALL}")


@pytest.fixture(scope="session")
def master(mooncake_available: None) -> Iterator[MooncakeMaster]:
    """A master shared by the whole session."""
    server = MooncakeMaster(lease_ms=200).start()
    yield server
    server.stop()
