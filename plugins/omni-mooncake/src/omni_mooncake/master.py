"""A ``mooncake_master`` on free ports (loopback by default), for tests and ``omni services up mooncake``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .netutil import is_reachable

INSTALL = "pip install 'omni-mooncake[cpu]' (Debian: apt-get install -y libibverbs1 libnuma1)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def master_binary() -> str | None:
    """The ``mooncake_master`` beside this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("mooncake_master")
    return str(beside) if beside.exists() else shutil.which("mooncake_master")


class MooncakeMaster:
    """A ``mooncake_master`` bound to ``host`` (127.0.0.1) on free ports, ready when its ``/health`` answers
    and its RPC port accepts connections; stopped by PID.

    ``launcher`` prefixes its command (e.g. ``ip netns exec NAME`` for a test host; then give that host's
    address as ``host``). ``detach`` starts it in its own session, so it outlives the starter; ``log_path``
    keeps its output in that file (default: an anonymous temporary file). ``client_ttl_s``: how long a client
    may stay silent before the master drops it and its segment (Mooncake's default: 10 s).
    """

    def __init__(
        self,
        lease_ms: int = 200,
        *,
        host: str = "127.0.0.1",
        launcher: Sequence[str] = (),
        detach: bool = False,
        log_path: Path | None = None,
        client_ttl_s: int | None = None,
    ) -> None:
        binary = master_binary()
        if binary is None:
            raise FileNotFoundError(f"mooncake_master is not installed: {INSTALL}")
        self.binary = binary
        self.lease_ms = lease_ms
        self.host = host
        self.launcher = list(launcher)
        self.detach = detach
        self.client_ttl_s = client_ttl_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()
        self.rpc_port = self.metrics_port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.rpc_port}"

    def start(self, timeout: float = 30.0) -> MooncakeMaster:
        """Start on free ports; returns once it serves."""
        self.rpc_port, self.metrics_port = free_port(), free_port()
        return self._spawn(timeout)

    def restart(self, timeout: float = 30.0) -> MooncakeMaster:
        """Start again on the same ports (after :meth:`kill`, as a supervisor would); returns once it serves."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"mooncake_master on {self.address} is still running")
        return self._spawn(timeout)

    def _spawn(self, timeout: float) -> MooncakeMaster:
        self.proc = subprocess.Popen(
            [
                *self.launcher,
                self.binary,
                f"--rpc_address={self.host}",
                f"--rpc_port={self.rpc_port}",
                f"--metrics_host={self.host}",
                f"--metrics_port={self.metrics_port}",
                "--enable_metric_reporting=false",
                "--minloglevel=1",
                f"--default_kv_lease_ttl={self.lease_ms}",
                *([f"--client_ttl={self.client_ttl_s}"] if self.client_ttl_s is not None else []),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mooncake_master exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/health", timeout=1) as answer:
                    healthy = answer.status == 200
                if healthy and is_reachable(self.host, self.rpc_port, timeout=1):  # /health can answer first
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mooncake_master did not report healthy within {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL after 15 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
