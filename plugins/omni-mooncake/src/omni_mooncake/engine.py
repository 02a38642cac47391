"""Starting a TransferEngine, and how long its transfers may take."""

from __future__ import annotations

import math
import os
from typing import Any

from .dependencies import import_engine

#: The engine's own bound on one transfer: MC_TRANSFER_TIMEOUT seconds (at least 5, default 30)
#: plus one nanosecond per byte (see transfer_engine_py.cpp).
DEFAULT_ENGINE_TIMEOUT_S = 30
MIN_ENGINE_TIMEOUT_S = 5
#: Receivers wait this much longer than the engine bound, plus this much per 100 MiB.
PULL_MARGIN_S = 5.0
PULL_PER_100MIB_S = 5.0
#: How long a metadata query may take.
QUERY_TIMEOUT_S = 5.0


def start_engine(host: str, protocol: str, device_name: str) -> tuple[Any, int]:
    """An initialized TransferEngine (P2P handshake, no metadata server) and its RPC port."""
    engine = import_engine().TransferEngine()
    rc = engine.initialize(host, "P2PHANDSHAKE", protocol, device_name)
    if rc != 0:
        raise RuntimeError(
            f"TransferEngine.initialize({host!r}, 'P2PHANDSHAKE', {protocol!r}, {device_name!r}) failed ({rc})"
            + ("; without RDMA hardware use protocol: tcp" if protocol == "rdma" else "")
        )
    return engine, int(engine.get_rpc_port())


def engine_transfer_bound_s(size: int) -> float:
    """The longest a TransferEngine write of ``size`` bytes can block before the engine gives up."""
    configured = os.environ.get("MC_TRANSFER_TIMEOUT", "")
    seconds = max(MIN_ENGINE_TIMEOUT_S, int(configured)) if configured.isdigit() else DEFAULT_ENGINE_TIMEOUT_S
    return seconds + size * 1e-9


def pull_timeout_s(size: int) -> float:
    """How long a receiver waits for a pull of ``size`` bytes (always longer than the engine's bound)."""
    return engine_transfer_bound_s(size) + PULL_MARGIN_S + PULL_PER_100MIB_S * math.ceil(size / (100 << 20))
