"""Test helpers: a real ``mooncake_master`` on free loopback ports, and connectors in child processes."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from omni_mooncake.master import MooncakeMaster

CHILD_SCRIPT = Path(__file__).with_name("mooncake_child.py")
MiB = 1 << 20


class ConnectorProcess:
    """A connector living in a child process (``mooncake_child.py``), driven by JSON lines; never pickle."""

    def __init__(self, name: str, extra: dict[str, Any], *, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT), json.dumps({"name": name, "extra": extra})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        hello = self._read(timeout)
        if not hello.get("ready"):
            self.kill()
            raise RuntimeError(f"child connector {name} did not start: {hello.get('error')}")
        self.info: dict[str, Any] = hello["info"]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            self.kill()
            raise TimeoutError(f"child {self.proc.pid} did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.proc.pid} exited with {self.proc.wait()}")
        return json.loads(line)

    def send(self, **command: Any) -> None:
        """Send a command without waiting for its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        return self._read(self.timeout if timeout is None else timeout)

    def call(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.receive()

    def put(self, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.call(op="put", key=key, payload=payload)

    def get(self, key: str, metadata: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.call(op="get", key=key, metadata=metadata, timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="close")
                self.proc.wait(self.timeout)
            except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ConnectorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
