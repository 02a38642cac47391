"""Test helpers: a real ``mooncake_master`` on free loopback ports, and connectors in child processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from omni_core.remote import JsonLinesChild
from omni_mooncake.master import MooncakeMaster

CHILD_SCRIPT = Path(__file__).with_name("mooncake_child.py")
MiB = 1 << 20


class ConnectorProcess(JsonLinesChild):
    """A connector living in a child process (``mooncake_child.py``), driven by JSON lines; never pickle."""

    def __init__(self, name: str, extra: dict[str, Any], *, timeout: float = 120.0) -> None:
        spec = json.dumps({"name": name, "extra": extra})
        super().__init__([sys.executable, str(CHILD_SCRIPT), spec], timeout=timeout, env={"PYTHONUNBUFFERED": "1"})
        self.info: dict[str, Any] = self.hello["info"]

    def put(self, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.call({"op": "put", "key": key, "payload": payload})

    def get(self, key: str, metadata: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.call({"op": "get", "key": key, "metadata": metadata, "timeout": timeout})


def store_extra(master: MooncakeMaster, **overrides: Any) -> dict[str, Any]:
    """Store connector config for the session master (P2P handshake, small segment and local buffer)."""
    return {
        "host": "127.0.0.1",
        "metadata_server": "P2PHANDSHAKE",
        "master": master.address,
        "segment": 96 * MiB,
        "localbuf": 32 * MiB,
        "get_timeout_s": 0.3,
        "setup_timeout_s": 10,
        **overrides,
    }


def te_extra(role: str, **overrides: Any) -> dict[str, Any]:
    """TransferEngine connector config on loopback over TCP."""
    extra: dict[str, Any] = {
        "role": role,
        "host": "127.0.0.1",
        "protocol": "tcp",
        "memory_pool_size": 32 * MiB,
    }
    if role == "sender":
        extra["zmq_port"] = 0
    return {**extra, **overrides}
