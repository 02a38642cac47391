"""FakeAscendTransferEngine: an in-test stand-in for ``yr.datasystem.TransferEngine``.

The real engine's data plane needs an Ascend NPU, which no test machine has.
This fake has the same API and the same model -- a receiver reads registered
memory of a peer process, addressed by ``host:rpc_port`` and raw addresses --
but moves the bytes over a plain TCP connection with ``ctypes``.  Like the real
engine it refuses port 0, device names other than ``npu:N``, overlapping
registrations and reads outside registered memory.  It is a test double, never
shipped: the connector gets it only through its ``engine_factory`` hook.
"""

from __future__ import annotations

import ctypes
import re
import socket
import socketserver
import struct
import threading
from typing import Any

from omni_core import OmniConnectorFactory

FAKE_CONNECTOR_NAME = "YuanrongTransferEngineConnector-with-FakeAscendTransferEngine"
_HEADER = struct.Struct("!I")
_SEGMENT = struct.Struct("!QQ")
_STATUS = struct.Struct("!BI")
_DEVICE = re.compile(r"^npu:\d+$")


class FakeResult:
    """The engine's Result: ``is_error()``, ``is_ok()``, ``to_string()``."""

    def __init__(self, error: str = "") -> None:
        self.error = error

    def is_error(self) -> bool:
        return bool(self.error)

    def is_ok(self) -> bool:
        return not self.error

    def to_string(self) -> str:
        return self.error or "code=0, msg="


class _Regions:
    """Registered ``(addr, length)`` ranges."""

    def __init__(self) -> None:
        self._ranges: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, addr: int, length: int) -> bool:
        with self._lock:
            if any(addr < a + n and a < addr + length for a, n in self._ranges.items()):
                return False
            self._ranges[addr] = length
            return True

    def remove(self, addr: int) -> bool:
        with self._lock:
            return self._ranges.pop(addr, None) is not None

    def covers(self, addr: int, length: int) -> bool:
        with self._lock:
            return any(a <= addr and addr + length <= a + n for a, n in self._ranges.items())


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _ReadHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        regions: _Regions = self.server.regions  # type: ignore[attr-defined]
        (count,) = _HEADER.unpack(_recv_exact(self.request, _HEADER.size))
        segments = [_SEGMENT.unpack(_recv_exact(self.request, _SEGMENT.size)) for _ in range(count)]
        bad = [(addr, length) for addr, length in segments if not regions.covers(addr, length)]
        if bad:
            message = f"code=3, msg=peer memory {bad[0]} is not registered".encode()
            self.request.sendall(_STATUS.pack(1, len(message)) + message)
            return
        self.request.sendall(_STATUS.pack(0, 0))
        for addr, length in segments:
            self.request.sendall(ctypes.string_at(addr, length))


class FakeAscendTransferEngine:
    """Same calls as ``yr.datasystem.TransferEngine``; data moves over TCP instead of HCCS/RoCE."""

    def __init__(self) -> None:
        self.regions = _Regions()
        self.reads = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._port = -1

    def initialize(self, local_hostname: str, protocol: str, device_name: str) -> FakeResult:
        host, _, port = local_hostname.rpartition(":")
        if not port.isdigit() or int(port) <= 0:
            return FakeResult("code=2, msg=targetHostname port should be positive")
        if not _DEVICE.match(device_name):
            return FakeResult("code=2, msg=device_name is invalid")
        try:
            server = socketserver.ThreadingTCPServer((host, int(port)), _ReadHandler)
        except OSError as exc:
            return FakeResult(f"code=5, msg=bind failed: {exc}")
        server.daemon_threads = True
        server.regions = self.regions  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server, self._port = server, int(port)
        return FakeResult()

    def get_rpc_port(self) -> int:
        return self._port

    def register_memory(self, addr: int, length: int) -> FakeResult:
        if self._server is None:
            return FakeResult("code=8, msg=transfer engine not initialized")
        if not self.regions.add(addr, length):
            return FakeResult("code=2, msg=failed to add registered region")
        return FakeResult()

    def unregister_memory(self, addr: int) -> FakeResult:
        return FakeResult() if self.regions.remove(addr) else FakeResult("code=3, msg=region not registered")

    def batch_transfer_sync_read(
        self, target_hostname: str, buffers: list[int], peer_buffer_addresses: list[int], lengths: list[int]
    ) -> FakeResult:
        if self._server is None:
            return FakeResult("code=8, msg=transfer engine not initialized")
        if not len(buffers) == len(peer_buffer_addresses) == len(lengths):
            return FakeResult("code=2, msg=buffers, peer addresses and lengths differ in count")
        if not all(self.regions.covers(addr, length) for addr, length in zip(buffers, lengths, strict=True)):
            return FakeResult("code=2, msg=local buffer is not registered")
        host, _, port = target_hostname.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                request = _HEADER.pack(len(lengths)) + b"".join(
                    _SEGMENT.pack(addr, length) for addr, length in zip(peer_buffer_addresses, lengths, strict=True)
                )
                sock.sendall(request)
                status, size = _STATUS.unpack(_recv_exact(sock, _STATUS.size))
                if status:
                    return FakeResult(_recv_exact(sock, size).decode())
                for local, length in zip(buffers, lengths, strict=True):
                    ctypes.memmove(local, _recv_exact(sock, length), length)
        except OSError as exc:
            return FakeResult(f"code=5, msg=read from {target_hostname} failed: {exc}")
        self.reads += 1
        return FakeResult()

    def finalize(self) -> FakeResult:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        return FakeResult()


def make_fake_engine_connector(extra: dict[str, Any]) -> Any:
    """The real connector, config checked against its real registration, with the fake engine injected."""
    from omni_yuanrong.te_connector import YuanrongTransferEngineConnector

    registration = OmniConnectorFactory.registration("YuanrongTransferEngineConnector")
    assert registration is not None
    checked = registration.validate_extra(extra, f"connector {FAKE_CONNECTOR_NAME!r}")
    return YuanrongTransferEngineConnector(checked, engine_factory=FakeAscendTransferEngine)


def register_fake_connector() -> str:
    """Register :func:`make_fake_engine_connector` in this process (idempotent); return its name."""
    if FAKE_CONNECTOR_NAME not in OmniConnectorFactory.list_registered_connectors():
        OmniConnectorFactory.register_connector(FAKE_CONNECTOR_NAME, make_fake_engine_connector)
    return FAKE_CONNECTOR_NAME
