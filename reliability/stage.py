"""The parent's handle on a stage child: start it, send commands, read answers with a timeout, SIGKILL it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class StageGone(RuntimeError):
    """The child exited (or was killed) before it answered."""


def child_env() -> dict[str, str]:
    """Children import this package through PYTHONPATH (it is not installed) and use one torch thread."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


class StageProcess:
    """One ``python -m reliability.child`` process."""

    def __init__(self, config: dict[str, Any], timeout: float = 60.0, env: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reliability.child", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**child_env(), **(env or {})},
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        hello = self.read()
        if not hello.get("ready"):
            raise RuntimeError(f"stage child did not start: {hello}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise StageGone(f"stage child {self.pid} is gone") from exc

    def read(self, timeout: float | None = None) -> dict[str, Any]:
        """The next answer; StageGone if the child exits first, TimeoutError after ``timeout``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buffer:
            if self.proc.stdout is None or self.proc.stdout.closed:
                raise StageGone(f"stage child {self.pid} was killed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"stage child {self.pid} did not answer")
            if select.select([self._fd], [], [], remaining)[0]:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    raise StageGone(f"stage child {self.pid} exited with {self.proc.wait()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def call(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.send(command)
        return self.read(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def close(self) -> None:
        """Ask the child to close its connector and exit; SIGKILL it if it does not."""
        if self.proc.poll() is None:
            try:
                self.call({"op": "close"}, timeout=30.0)
                self.proc.wait(timeout=30.0)
            except (StageGone, TimeoutError, subprocess.TimeoutExpired):
                self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
