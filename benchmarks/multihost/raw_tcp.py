"""A raw TCP stream between two test hosts: the floor of every connector's path between them.

``python raw_tcp.py recv ADDRESS`` listens on ADDRESS (port 0), says ``{"ready": true, "port": P}`` and
receives sizes-prefixed blocks into one preallocated buffer, acknowledging each with one byte.
``python raw_tcp.py send ADDRESS PORT`` connects and answers each ``{"op": "send", "size": N}`` with
``{"seconds": S}``: from the first byte sent until the receiver acknowledged all N.  Both stop on
``{"op": "close"}`` (or end of input).  JSON lines on stdin/stdout, as ``omni_core.remote``.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("!Q")


def answer(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def receive_into(conn: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``conn``; False if the peer closed first."""
    while view:
        got = conn.recv_into(view)
        if not got:
            return False
        view = view[got:]
    return True


def serve(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    buffer = bytearray(1)
    header = bytearray(HEADER.size)
    while receive_into(conn, memoryview(header)):
        (size,) = HEADER.unpack(header)
        if size > len(buffer):
            buffer = bytearray(size)
        if not receive_into(conn, memoryview(buffer)[:size]):
            return
        conn.sendall(b"\x01")


def main(argv: list[str]) -> int:
    role, address, *rest = argv
    if role == "recv":
        listener = socket.create_server((address, 0))
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        answer({"ready": True, "port": listener.getsockname()[1]})
        for line in sys.stdin:
            if json.loads(line)["op"] == "close":
                break
        answer({"closed": True})
        return 0
    conn = socket.create_connection((address, int(rest[0])))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = bytearray(1)
    answer({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "close":
            break
        size = int(command["size"])
        if size > len(data):
            data = bytearray(b"\x01" * size)  # written once: its pages are faulted in before the first send
        started = time.perf_counter()
        conn.sendall(HEADER.pack(size))
        conn.sendall(memoryview(data)[:size])
        ack = conn.recv(1)
        answer({"seconds": time.perf_counter() - started, "ok": ack == b"\x01"})
    conn.close()
    answer({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
