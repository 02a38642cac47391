"""Backend servers the chaos driver kills and restarts at the same address, as a supervisor would.

- :class:`YuanrongWorker`: an openYuanrong datasystem worker (the plugin's ``LocalDatasystemWorker`` settings),
  restarted on its own ports and directory;
- :class:`CoordinatorServer`: ``omni coordinator serve`` in a child process, restarted on its own ports;
- :class:`MooncakeMasterServer`: a ``mooncake_master`` (the plugin's ``MooncakeMaster`` flags), restarted on its
  own ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .stage import child_env


class Backend:
    """A server process that can be SIGKILLed and restarted where it was."""

    name = "backend"
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ports(self) -> list[int]:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the server (a crash)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        """Start it again at the same address; returns once it serves."""
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class YuanrongWorker(Backend):
    """A datasystem worker with its built-in metastore on 127.0.0.1 (data lives in its memory only)."""

    name = "Yuanrong worker"

    def __init__(self, shared_memory_mb: int = 512) -> None:
        from omni_yuanrong.testing import LocalDatasystemWorker

        self._shared_memory_mb = shared_memory_mb
        first = LocalDatasystemWorker.start(shared_memory_mb=shared_memory_mb)
        self.host, self.port, self.metastore_port = first.host, first.port, first.metastore_port
        self.workdir = first.workdir
        self.process = first.process

    @property
    def ports(self) -> list[int]:
        return [self.port, self.metastore_port]

    def restart(self, ready_timeout_s: float = 60.0) -> None:
        from omni_yuanrong.backend import import_datasystem
        from omni_yuanrong.testing import LEAN_FLAGS

        package = Path(import_datasystem().__file__ or "").parent
        ready = self.workdir / "probe" / "ready"
        ready.unlink(missing_ok=True)
        flags = {
            "worker_address": f"{self.host}:{self.port}",
            "metastore_address": f"{self.host}:{self.metastore_port}",
            "start_metastore_service": "true",
            "shared_memory_size_mb": str(self._shared_memory_mb),
            **LEAN_FLAGS,
            "log_dir": str(self.workdir / "logs"),
            "rocksdb_store_dir": str(self.workdir / "rocksdb"),
            "unix_domain_socket_dir": str(self.workdir / "uds"),
            "ready_check_path": str(ready),
            "health_check_path": str(self.workdir / "probe" / "healthy"),
        }
        env = {**os.environ, "HOME": str(self.workdir), "LD_LIBRARY_PATH": str(package / "lib")}
        with open(self.workdir / "worker.out", "ab") as output:
            self.process = subprocess.Popen(
                [str(package / "datasystem_worker"), *(f"--{k}={v}" for k, v in flags.items())],
                env=env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout_s
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Yuanrong worker did not restart on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


class CoordinatorServer(Backend):
    """``python -m omni_coordinator.cli serve`` on 127.0.0.1; the first start picks free ports."""

    name = "coordinator"

    def __init__(self, heartbeat_timeout: float = 1.0) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.router_port = self.pub_port = 0
        self.restart()

    @property
    def ports(self) -> list[int]:
        return [self.router_port, self.pub_port]

    @property
    def router(self) -> str:
        return f"tcp://127.0.0.1:{self.router_port}"

    @property
    def pub(self) -> str:
        return f"tcp://127.0.0.1:{self.pub_port}"

    def restart(self) -> None:
        from omni_coordinator.cli import parse_announcement

        command = [sys.executable, "-m", "omni_coordinator.cli", "serve", "--host", "127.0.0.1",
                   "--router-port", str(self.router_port), "--pub-port", str(self.pub_port),
                   "--heartbeat-timeout", str(self.heartbeat_timeout)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=child_env())
        assert self.process.stdout is not None
        found: dict[str, str] = {}
        while len(found) < 2:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the coordinator did not start (exit code {self.process.wait()})")
            parsed = parse_announcement(line.decode())
            if parsed is not None:
                found[parsed[0]] = parsed[1]
        self.process.stdout.close()
        self.router_port = int(found["router"].rsplit(":", 1)[1])
        self.pub_port = int(found["pub"].rsplit(":", 1)[1])


class MooncakeMasterServer(Backend):
    """``mooncake_master`` on 127.0.0.1 (metadata in its memory only), object leases of ``lease_ms``."""

    name = "Mooncake master"

    def __init__(self, lease_ms: int = 200) -> None:
        from omni_mooncake.master import INSTALL, free_port, master_binary

        binary = master_binary()
        if binary is None:
            raise FileNotFoundError(f"mooncake_master is not installed: {INSTALL}")
        self.binary = binary
        self.lease_ms = lease_ms
        self.rpc_port, self.metrics_port = free_port(), free_port()
        self.log = tempfile.TemporaryFile()
        self.restart()

    @property
    def ports(self) -> list[int]:
        return [self.rpc_port, self.metrics_port]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"

    def restart(self, ready_timeout_s: float = 30.0) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--rpc_address=127.0.0.1", f"--rpc_port={self.rpc_port}", "--metrics_host=127.0.0.1",
             f"--metrics_port={self.metrics_port}", "--enable_metric_reporting=false", "--minloglevel=1",
             f"--default_kv_lease_ttl={self.lease_ms}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mooncake_master did not (re)start on port {self.rpc_port}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        self.log.close()
