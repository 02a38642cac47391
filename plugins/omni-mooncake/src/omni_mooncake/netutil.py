"""Host and address helpers."""

from __future__ import annotations

import socket
import time


def split_host_port(address: str, what: str) -> tuple[str, int]:
    """``("127.0.0.1", 50051)`` from ``"127.0.0.1:50051"``; ValueError naming ``what`` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must look like 'host:port', got {address!r}")
    return host.strip("[]"), int(port)


def is_reachable(host: str, port: int, timeout: float) -> bool:
    """True if a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


def wait_until_reachable(host: str, port: int, timeout: float, interval: float = 0.1) -> bool:
    """Retry :func:`is_reachable` until it succeeds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if is_reachable(host, port, min(1.0, max(remaining, 0.05))):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
