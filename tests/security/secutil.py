"""Helpers of the security tests: listening sockets by port or process, raw peers."""

from __future__ import annotations

import os
import socket
from typing import Any

from omni_core.testing.hosts import listening_ports


def ports_of(pid: int) -> dict[int, set[str]]:
    """The listening ports of process ``pid`` and the addresses each is bound to (``0.0.0.0``/``::`` for all)."""
    return listening_ports(pid)


def silent_peers(port: int, count: int) -> list[socket.socket]:
    """Connections that never say a word (slowloris)."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def garbage_peers(port: int, count: int, payload: bytes) -> list[socket.socket]:
    """Connections that send ``payload`` and then nothing."""
    peers = silent_peers(port, count)
    for peer in peers:
        peer.sendall(payload)
    return peers


def close_all(peers: list[socket.socket]) -> None:
    for peer in peers:
        peer.close()


class RecordingProxy:
    """A TCP forwarder on 127.0.0.1 that records every byte its clients send (a wire tap, for encryption tests)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.sent = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = [self._listener]
        self._start(self._accept)

    def _start(self, target: object, *args: object) -> None:
        import threading

        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            self._start(self._pump, client, server, True)
            self._start(self._pump, server, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                if record:
                    self.sent += data
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def mooncake_te(role: str, **extra: object) -> Any:
    """A Mooncake TransferEngine connector over TCP on 127.0.0.1 with a 4 MiB pool."""
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
    from omni_core import ConnectorSpec, OmniConnectorFactory

    config = {"role": role, "host": "127.0.0.1", "protocol": "tcp", "memory_pool_size": 4 << 20, **extra}
    return OmniConnectorFactory.create_connector(ConnectorSpec("MooncakeTransferEngineConnector", config))
