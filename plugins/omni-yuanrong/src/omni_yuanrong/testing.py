"""A throwaway datasystem worker, for tests, benchmarks and local experiments; and one on a test host.

It runs the ``datasystem_worker`` binary shipped in the ``openyuanrong-datasystem``
wheel directly (not through ``dscli``), on loopback by default, with its built-in
metastore (no etcd) or joining another worker's, a lean thread profile for small
machines, every path inside one temporary directory (``HOME`` included, so nothing
lands in ``~/datasystem``) and RocksDB's write-ahead log off.  Stop it with
:meth:`LocalDatasystemWorker.stop` (SIGTERM, then SIGKILL), which also removes the
directory.

:class:`HostWorker` runs one on a test host (``omni_core.testing.hosts``), its Unix socket visible on that host
only, so that clients on other test hosts talk TCP to it as clients on other machines do.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .backend import import_datasystem
from .netutil import free_port

#: Flags that shrink the worker from ~500 to ~270 threads (verified on a 2-core machine).
LEAN_FLAGS: dict[str, str] = {
    "sc_thread_num": "4",
    "master_sc_thread_num": "4",
    "sc_scan_thread_num": "2",
    "oc_thread_num": "8",
    "rpc_thread_num": "4",
    "rocksdb_background_threads": "2",
    "l2_cache_delete_thread_num": "2",
    "spill_thread_num": "1",
    "remote_send_thread_num": "1",
    "sc_regular_socket_num": "4",
    "sc_stream_socket_num": "4",
    "eviction_reserve_mem_threshold_mb": "100",
    "rocksdb_write_mode": "none",
    "log_monitor": "false",
}
_START_ATTEMPTS = 3
#: Mount a private tmpfs on the socket directory ($0), then become the worker.
_PRIVATE_SOCKETS = 'mkdir -p "$0" && mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && exec "$@"'
#: Library timeouts of :meth:`HostWorker.kv_extra`: a host that does not answer shows up in seconds, not 60 s.
CLIENT_TIMEOUTS = {"connect_timeout_ms": 2000, "req_timeout_ms": 2000}


class WorkerStartError(RuntimeError):
    """The worker exited or did not become ready in time; the message holds its log tail."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


class LocalDatasystemWorker:
    """One datasystem worker in a private temporary directory.

    ``metastore_address`` is the metastore it uses: its own (``host:metastore_port``,
    started with it) or the one it joined.
    """

    def __init__(
        self, command: list[str], env: dict[str, str], workdir: Path, host: str, port: int, metastore_address: str
    ) -> None:
        self.command = command
        self.env = env
        self.workdir = workdir
        self.host = host
        self.port = port
        self.metastore_address = metastore_address
        self.metastore_port = int(metastore_address.rsplit(":", 1)[1])
        self.process = self._spawn("wb")

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def start(
        cls,
        *,
        shared_memory_mb: int = 1024,
        ready_timeout_s: float = 60.0,
        host: str = "127.0.0.1",
        metastore: str | None = None,
        launcher: Sequence[str] = (),
        flags: Mapping[str, str] | None = None,
        l2_cache: bool = False,
    ) -> LocalDatasystemWorker:
        """Start a worker on a free port of ``host`` and wait for its ready file.

        With ``metastore=None`` the worker starts its own metastore on another free
        port of ``host`` (about 6 s); with ``metastore="ip:port"`` it joins that
        metastore's cluster (about 1-2 s).  ``launcher`` prefixes the command (e.g.
        ``ip netns exec NS`` to start it on a test host); ``flags`` adds or
        overrides worker flags.  ``l2_cache`` gives it a second-level cache on disk
        in its directory (``distributed_disk``), which values written with the
        connector's ``write_mode: write_through`` survive a restart in.  A port
        taken between choosing and binding it is retried with new ports.
        """
        error: WorkerStartError | None = None
        for _ in range(_START_ATTEMPTS):
            workdir = Path(tempfile.mkdtemp(prefix="omni-yuanrong-worker-"))
            try:
                l2 = {"l2_cache_type": "distributed_disk", "distributed_disk_path": str(workdir / "l2")}
                return cls._start_in(
                    workdir, shared_memory_mb, ready_timeout_s, host, metastore, launcher,
                    {**(l2 if l2_cache else {}), **(flags or {})},
                )
            except WorkerStartError as exc:
                shutil.rmtree(workdir, ignore_errors=True)
                error = exc
                if not exc.port_taken:
                    break
        assert error is not None
        raise error

    @classmethod
    def _start_in(
        cls,
        workdir: Path,
        shared_memory_mb: int,
        ready_timeout_s: float,
        host: str,
        metastore: str | None,
        launcher: Sequence[str],
        extra_flags: dict[str, str],
    ) -> LocalDatasystemWorker:
        package = Path(import_datasystem().__file__ or "").parent
        binary = package / "datasystem_worker"
        if not binary.is_file():
            raise WorkerStartError(f"no datasystem_worker binary in {package}; reinstall openyuanrong-datasystem")
        port = free_port()
        metastore_address = metastore or f"{host}:{free_port()}"
        ready = workdir / "probe" / "ready"
        flags = {
            "worker_address": f"{host}:{port}",
            "metastore_address": metastore_address,
            "start_metastore_service": "false" if metastore else "true",
            "shared_memory_size_mb": str(shared_memory_mb),
            **LEAN_FLAGS,
            "log_dir": str(workdir / "logs"),
            "rocksdb_store_dir": str(workdir / "rocksdb"),
            "unix_domain_socket_dir": str(workdir / "uds"),
            "ready_check_path": str(ready),
            "health_check_path": str(workdir / "probe" / "healthy"),
            **extra_flags,
        }
        env = {**os.environ, "HOME": str(workdir), "LD_LIBRARY_PATH": str(package / "lib")}
        command = [*launcher, str(binary), *(f"--{name}={value}" for name, value in flags.items())]
        worker = cls(command, env, workdir, host, port, metastore_address)
        worker._wait_ready(ready_timeout_s)
        return worker

    def _spawn(self, mode: str) -> subprocess.Popen[bytes]:
        (self.workdir / "probe" / "ready").unlink(missing_ok=True)  # a killed worker leaves it
        with open(self.workdir / "worker.out", mode) as output:
            return subprocess.Popen(
                self.command, env=self.env, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def _wait_ready(self, ready_timeout_s: float) -> None:
        ready = self.workdir / "probe" / "ready"
        deadline = time.monotonic() + ready_timeout_s
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                reason = f"exited with code {code}" if code is not None else "never got ready"
                self.kill()
                raise WorkerStartError(
                    f"datasystem worker on {self.endpoint} {reason} (waited up to {ready_timeout_s} s):\n"
                    + self.log_tail(),
                    port_taken="Address already in use" in self.log_tail(lines=0),
                )
            time.sleep(0.2)

    def restart(self, ready_timeout_s: float = 60.0) -> None:
        """Start the worker again at the same address, with the same flags and directory (after :meth:`kill`)."""
        if self.process.poll() is None:
            raise RuntimeError(f"datasystem worker on {self.endpoint} is still running")
        self.process = self._spawn("ab")
        self._wait_ready(ready_timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines (0: all) of the worker's console output and INFO log."""
        parts = []
        for path in (self.workdir / "worker.out", *sorted((self.workdir / "logs").glob("*.INFO*"))):
            if path.is_file():
                parts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(parts)

    def kill(self) -> None:
        """SIGKILL the worker (simulates a crash); the directory stays until :meth:`stop`."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the worker, SIGKILL it after ``timeout_s``, and remove its directory."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalDatasystemWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class HostWorker:
    """A datasystem worker on test host ``host``, its Unix socket visible on that host only.

    A test host is a network namespace, but every process on the machine shares one filesystem: a client on
    another test host would find the worker's Unix domain socket and map its shared memory, which no client on
    another machine can.  So the socket directory is a tmpfs mounted in the worker's own mount namespace: only
    processes started with :attr:`prefix` (inside the worker's mount and network namespaces) see it; any other
    process talks TCP to it.  ``metastore=None`` starts the cluster's metastore with it; ``"ip:port"`` joins that
    one.  ``host`` is an ``omni_core.testing.hosts.TestHost`` (its ``address`` and ``exec_prefix`` are used).
    Needs root (``mount``, ``nsenter``).
    """

    def __init__(
        self, host: Any, *, metastore: str | None = None, flags: dict[str, str] | None = None,
        shared_memory_mb: int = 256, l2_cache: bool = False,
    ) -> None:  # fmt: skip
        self.host = host
        self.sockets = tempfile.mkdtemp(prefix="omni-yr-uds-")
        try:
            self.worker = LocalDatasystemWorker.start(
                shared_memory_mb=shared_memory_mb,
                host=host.address,
                metastore=metastore,
                launcher=[*host.exec_prefix, "sh", "-c", _PRIVATE_SOCKETS, self.sockets],
                flags={"unix_domain_socket_dir": self.sockets, **(flags or {})},
                l2_cache=l2_cache,
            )
        except BaseException:
            os.rmdir(self.sockets)
            raise

    @property
    def endpoint(self) -> tuple[str, int]:
        return self.worker.host, self.worker.port

    @property
    def prefix(self) -> list[str]:
        """Run a command on this worker's host: its network namespace and its mount namespace (the socket)."""
        pid = self.worker.pid
        return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", f"--net=/proc/{pid}/ns/net"]

    def kv_extra(self, **overrides: Any) -> dict[str, Any]:
        """``YuanrongConnector`` config for this worker (gets wait 200 ms; :data:`CLIENT_TIMEOUTS`)."""
        host, port = self.endpoint
        return {"host": host, "port": port, "get_sub_timeout_ms": 200, **CLIENT_TIMEOUTS, **overrides}

    def stop(self) -> None:
        self.worker.stop()
        shutil.rmtree(self.sockets, ignore_errors=True)
