"""Backend servers the chaos driver kills and restarts at the same address, as a supervisor would; each on
127.0.0.1, or on a test host (``host``: an ``omni_core.testing.hosts.TestHost``) for the partition scenarios.

- :class:`YuanrongWorker`: an openYuanrong datasystem worker (the plugin's ``LocalDatasystemWorker``), restarted
  on its own ports and directory;
- :class:`CoordinatorServer`: ``omni coordinator serve`` in a child process, restarted on its own ports;
- :class:`MooncakeMasterServer`: a ``mooncake_master`` (the plugin's ``MooncakeMaster``), restarted on its own
  ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

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
    """A datasystem worker (the plugin's ``LocalDatasystemWorker``) on 127.0.0.1, the one the stages use.

    Alone it runs its cluster's metastore, and its data lives in its memory only. With ``l2_cache`` it joins
    the metastore of a second worker that is never killed (as a cluster's etcd or head node outlives one
    worker) and keeps a write-through copy of every value in its second-level cache on disk.
    """

    name = "Yuanrong worker"

    def __init__(self, shared_memory_mb: int = 512, *, l2_cache: bool = False, host: Any = None) -> None:
        from omni_yuanrong.testing import HostWorker, LocalDatasystemWorker

        self.head = LocalDatasystemWorker.start(shared_memory_mb=64) if l2_cache else None
        metastore = self.head.metastore_address if self.head is not None else None
        self.on_host = HostWorker(host, shared_memory_mb=shared_memory_mb) if host is not None else None
        self.worker = self.on_host.worker if self.on_host is not None else LocalDatasystemWorker.start(
            shared_memory_mb=shared_memory_mb, l2_cache=l2_cache, metastore=metastore
        )
        self.host, self.port = self.worker.host, self.worker.port

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.worker.process

    @property
    def ports(self) -> list[int]:
        return [self.port, self.worker.metastore_port]

    def restart(self) -> None:
        self.worker.restart()

    def stop(self) -> None:
        (self.on_host or self.worker).stop()
        if self.head is not None:
            self.head.stop()


class CoordinatorServer(Backend):
    """``python -m omni_coordinator.cli serve`` on 127.0.0.1 (or ``host``); the first start picks free ports."""

    name = "coordinator"

    def __init__(self, heartbeat_timeout: float = 1.0, host: Any = None) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.address = host.address if host is not None else "127.0.0.1"
        self.prefix: list[str] = list(host.exec_prefix) if host is not None else []
        self.router_port = self.pub_port = 0
        self.restart()

    @property
    def ports(self) -> list[int]:
        return [self.router_port, self.pub_port]

    @property
    def router(self) -> str:
        return f"tcp://{self.address}:{self.router_port}"

    @property
    def pub(self) -> str:
        return f"tcp://{self.address}:{self.pub_port}"

    def restart(self) -> None:
        from omni_coordinator.cli import parse_announcement

        command = [*self.prefix, sys.executable, "-m", "omni_coordinator.cli", "serve", "--host", self.address,
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
    """The plugin's ``MooncakeMaster`` on 127.0.0.1 or ``host`` (metadata in its memory only), object leases of
    ``lease_ms``."""

    name = "Mooncake master"

    def __init__(self, lease_ms: int = 200, host: Any = None) -> None:
        from omni_mooncake.master import MooncakeMaster

        where = {"host": host.address, "launcher": host.exec_prefix} if host is not None else {}
        self.master = MooncakeMaster(lease_ms=lease_ms, **where).start()

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.master.proc is not None
        return self.master.proc

    @property
    def ports(self) -> list[int]:
        return [self.master.rpc_port, self.master.metrics_port]

    @property
    def address(self) -> str:
        return self.master.address

    def restart(self) -> None:
        self.master.restart()

    def stop(self) -> None:
        self.master.stop()
        self.master.log.close()
