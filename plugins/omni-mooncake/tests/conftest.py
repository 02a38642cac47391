"""Fixtures: one real ``mooncake_master`` per session (loopback, free ports, 200 ms leases)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from mooncake_procs import INSTALL, MooncakeMaster, require_backend

os.environ.setdefault("MC_LOG_LEVEL", "ERROR")  # children inherit it

MiB = 1 << 20


def _mooncake_importable() -> str | None:
    try:
        import mooncake.engine
        import mooncake.store  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def mooncake_available() -> None:
    problem = _mooncake_importable()
    require_backend(problem is None, f"the Mooncake wheel does not import ({problem}): {INSTALL}")


@pytest.fixture(scope="session")
def master(mooncake_available: None) -> Iterator[MooncakeMaster]:
    """A master shared by the whole session."""
    server = MooncakeMaster(lease_ms=200).start()
    yield server
    server.stop()


def store_extra(master: MooncakeMaster, **overrides: Any) -> dict[str, Any]:
    """Store connector config for the session master (P2P handshake, small segment and local buffer)."""
    return {
        "host": "127.0.0.1",
        "metadata_server": "P2PHANDSHAKE",
        "master": master.address,
        "segment": 96 * MiB,
        "localbuf": 32 * MiB,
        "get_timeout_s": 0.3,
        "setup_timeout_s": 10,
        **overrides,
    }


def te_extra(role: str, **overrides: Any) -> dict[str, Any]:
    """TransferEngine connector config on loopback over TCP."""
    extra: dict[str, Any] = {
        "role": role,
        "host": "127.0.0.1",
        "protocol": "tcp",
        "memory_pool_size": 32 * MiB,
    }
    if role == "sender":
        extra["zmq_port"] = 0
    return {**extra, **overrides}
