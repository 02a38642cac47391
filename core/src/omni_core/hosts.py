"""This machine's address, for connectors configured with ``host: auto``."""

from __future__ import annotations

import socket

from .envexpand import AUTO_HOST_VALUES


def resolve_host(host: str | None) -> str:
    """``host`` itself, or for None/"auto"/"0.0.0.0"/... this machine's outward-facing IPv4 (127.0.0.1 if none)."""
    if host is not None and str(host).strip().lower() not in AUTO_HOST_VALUES:
        return str(host)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("8.8.8.8", 80))  # no packet is sent: this only selects the outgoing interface
            return str(probe.getsockname()[0])
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
