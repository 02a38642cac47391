"""Helpers the coordinator tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

import zmq

from omni_core.testing import eventually

__all__ = ["TIMEOUT", "addrs", "event", "eventually", "recv_json"]

#: Heartbeat timeout the coordinator fixtures use: short, so liveness tests finish quickly.
TIMEOUT = 1.0


def addrs(replica_list: Any) -> set[str]:
    return {r.input_addr for r in replica_list.replicas}


def recv_json(sock: zmq.Socket, timeout: float = 5.0) -> Any:
    """The next message's last frame, JSON-decoded; fail after ``timeout`` seconds."""
    assert sock.poll(int(timeout * 1000)), f"no message within {timeout}s"
    return json.loads(sock.recv_multipart()[-1])


def event(input_addr: str, event_type: str = "update", status: str = "up", queue_length: Any = 0,
          stage_id: int = 0) -> bytes:
    """An upstream-format stage event."""
    return json.dumps({"input_addr": input_addr, "output_addr": input_addr + "/out", "stage_id": stage_id,
                       "event_type": event_type, "status": status, "queue_length": queue_length}).encode()
