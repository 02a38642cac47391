"""The TransferEngine API the connector drives, the real engine, and how its results become errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .backend import import_datasystem
from .netutil import free_port

#: What a machine needs for the engine's data plane, named in every data-plane error.
ASCEND_REQUIREMENT = (
    "the Yuanrong TransferEngine data plane needs an Ascend NPU with the CANN runtime (libascendcl.so, "
    "libhccl.so) and torch_npu; this host has none, so only initialization, memory registration and the "
    "control plane work here"
)
_ASCEND_MISSING_MARKERS = ("libascendcl", "libhccl", "p2p_transfer library not loaded")
_RPC_PORT_ATTEMPTS = 3


class TransferEngineError(RuntimeError):
    """A TransferEngine call returned an error result."""


class EngineResult(Protocol):
    """What every engine call returns."""

    def is_error(self) -> bool: ...

    def to_string(self) -> str: ...


class TransferEngineAPI(Protocol):
    """The subset of ``yr.datasystem.TransferEngine`` the connector uses (receiver reads only)."""

    def initialize(self, local_hostname: str, protocol: str, device_name: str) -> EngineResult: ...

    def get_rpc_port(self) -> int: ...

    def register_memory(self, addr: int, length: int) -> EngineResult: ...

    def unregister_memory(self, addr: int) -> EngineResult: ...

    def batch_transfer_sync_read(
        self, target_hostname: str, buffers: list[int], peer_buffer_addresses: list[int], lengths: list[int]
    ) -> EngineResult: ...

    def finalize(self) -> EngineResult: ...


EngineFactory = Callable[[], TransferEngineAPI]


def real_engine() -> TransferEngineAPI:
    """A ``TransferEngine`` from the installed openYuanrong bindings."""
    module = import_datasystem(names=("TransferEngine",))
    engine: TransferEngineAPI = module.TransferEngine()
    return engine


def check(result: EngineResult, action: str) -> None:
    """Raise :class:`TransferEngineError` if ``result`` is an error."""
    if result.is_error():
        raise engine_error(result, action)


def engine_error(result: EngineResult, action: str) -> TransferEngineError:
    """The error for a failed call, naming ``action`` (and the Ascend requirement when that is the cause)."""
    text = result.to_string()
    hint = f" ({ASCEND_REQUIREMENT})" if any(marker in text for marker in _ASCEND_MISSING_MARKERS) else ""
    return TransferEngineError(f"TransferEngine {action} failed: {text}{hint}")


def initialize_engine(engine: TransferEngineAPI, host: str, rpc_port: int | None, protocol: str, device: str) -> int:
    """Initialize ``engine`` on ``host`` and return its RPC port.

    The engine binds its RPC port itself and refuses port 0, so an automatic
    port (``rpc_port=None``) is a free port picked just before; if another
    process takes it first, a new one is tried.
    """
    attempt = 0
    while True:
        attempt += 1
        port = rpc_port or free_port(host)
        result = engine.initialize(f"{host}:{port}", protocol, device)
        if not result.is_error():
            reported = engine.get_rpc_port()
            return reported if reported > 0 else port
        retry = rpc_port is None and "bind failed" in result.to_string() and attempt < _RPC_PORT_ATTEMPTS
        if not retry:
            raise engine_error(result, f"initialize({host}:{port}, protocol={protocol!r}, device_name={device!r})")
