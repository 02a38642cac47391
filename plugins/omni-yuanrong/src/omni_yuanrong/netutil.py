"""Ports for servers that bind their own sockets."""

from __future__ import annotations

import socket


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
