"""Host and port helpers: this machine's address, and ports for servers that bind their own sockets."""

from __future__ import annotations

import socket


def local_ip() -> str:
    """This host's outward-facing IPv4 address (no packet is sent); 127.0.0.1 if there is none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("8.8.8.8", 80))
            return str(sock.getsockname()[0])
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now.

    Only for servers that insist on binding a concrete port themselves (the
    datasystem worker, the TransferEngine's RPC server): the port can be taken
    before they bind it, so their callers retry on "address in use".  Sockets we
    own bind port 0 instead.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
