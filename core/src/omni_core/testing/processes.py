"""Drive a connector living in a child process (see ``omni_core.testing.child``)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from omni_core.spec import ConnectorSpec


class ChildConnector:
    """A child process owning one connector, answering JSON commands."""

    def __init__(self, spec: ConnectorSpec, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omni_core.testing.child", json.dumps({"name": spec.name, "extra": spec.extra})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"child connector did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"child connector (pid {self.proc.pid}) did not answer in {self.timeout} s")
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if readable:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"child connector (pid {self.proc.pid}) exited with {self.proc.wait()}")
                return json.loads(line)

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one command and return the child's answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask the child to close its connector and exit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.call({"op": "close"})
                self.proc.wait(timeout=self.timeout)
            except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ChildConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
