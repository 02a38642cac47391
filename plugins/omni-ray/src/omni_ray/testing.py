"""A real multi-node Ray cluster on test hosts, for tests and benchmarks.

Three test hosts (network namespaces, ``omni_core.testing.hosts``): the head on host 1, a worker node
on each other host, every node with a custom resource ``omni_host_<i>`` (place an actor on host ``i``
with ``resources={"omni_host_<i>": 0.01}``).  Started with the ``ray`` command of this interpreter's
environment, all files under one temporary directory, no dashboard, no usage stats::

    @pytest.fixture(scope="session")
    def ray_cluster():
        with RayTestCluster.for_test(3) as cluster:   # skips without root (fails under CI=true)
            cluster.connect_driver()                  # this process joins as a driver on host 1
            yield cluster

    cluster.hosts.host(2).child_connector(spec)       # a connector in a process on host 2's node

:meth:`RayTestCluster.close` stops every Ray process (with the test hosts) and removes the directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from omni_core.testing import require
from omni_core.testing.hosts import NETNS_DIR, NamespaceHosts

if TYPE_CHECKING:
    from typing_extensions import Self

    from omni_core.testing.hosts import TestHost

#: The GCS port of the head (each test host has its own network namespace, so it never collides).
HEAD_PORT = 6379
_CLONE_NEWNET = 0x40000000
#: Ray's chatter off, and no token authentication whatever ~/.ray holds (Ray 2.60 turns it on for `ray start
#: --head` when a token file exists, but not for nodes that join by address).
_QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1", "RAY_AUTH_MODE": "disabled"}


#: A resource every worker node (not the head) has one unit of: one replica per worker node.
WORKER_RESOURCE = "omni_worker"
#: The node label every node carries: its test host, ``h<i>``.
HOST_LABEL = "omni-host"


def host_resource(index: int) -> str:
    """The custom resource that only test host ``index``'s node has."""
    return f"omni_host_{index}"


@contextlib.contextmanager
def entered_netns(netns: str) -> Iterator[None]:
    """Run the calling thread inside network namespace ``netns`` for the block (threads started meanwhile stay)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(target)
        os.close(home)


class RayTestCluster:
    """A Ray cluster of ``count`` test hosts: head on host 1, worker nodes on hosts 2..count."""

    def __init__(
        self, count: int = 3, *, num_cpus: int = 1, object_store_bytes: int = 300 * 10**6, start_timeout: float = 120
    ) -> None:
        self.ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
        if not os.path.exists(self.ray_bin):
            raise RuntimeError(f"no `ray` command next to {sys.executable}: pip install ray")
        self.hosts = NamespaceHosts(count)
        self.temp_dir = tempfile.mkdtemp(prefix="omr")  # short: Ray's socket paths must fit in 107 bytes
        self.address = f"{self.head.address}:{HEAD_PORT}"
        self._num_cpus = num_cpus
        self._store = object_store_bytes
        self._driver = False
        try:
            self._start(start_timeout)
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_test(cls, count: int = 3, **kwargs: Any) -> RayTestCluster:
        """A cluster for a test: skips it without root or the ``ray`` command (fails under CI=true)."""
        from omni_core.testing.hosts import can_make_hosts

        ok, why = can_make_hosts()
        require(ok, why)
        require(shutil.which("ray", path=os.path.dirname(sys.executable)) is not None, "ray is not installed")
        return cls(count, **kwargs)

    @property
    def head(self) -> TestHost:
        return self.hosts.host(1)

    def env(self) -> dict[str, str]:
        """Environment for processes that join the cluster (``RAY_ADDRESS`` set, Ray's chatter off)."""
        return {**os.environ, **_QUIET, "RAY_ADDRESS": self.address}

    def _node_args(self, host: TestHost) -> list[str]:
        return [
            "--node-ip-address", host.address, "--num-cpus", str(self._num_cpus),
            "--object-store-memory", str(self._store), "--resources", json.dumps(self._resources(host.index)),
            "--labels", f"{HOST_LABEL}=h{host.index}",
            "--temp-dir", self.temp_dir, "--disable-usage-stats",
        ]  # fmt: skip

    def _resources(self, index: int) -> dict[str, float]:
        """Host ``index``'s custom resources: its own, and ``omni_worker`` on worker nodes (one unit each)."""
        return {host_resource(index): 1, **({WORKER_RESOURCE: 1} if index > 1 else {})}

    def _start(self, timeout: float) -> None:
        """The head, then each worker node in turn (nodes started together race for their socket names)."""
        self._ray_start(self.head, ["--head", "--port", str(HEAD_PORT), "--include-dashboard=false"], timeout)
        for host in self.hosts.hosts[1:]:
            self._ray_start(host, ["--address", self.address], timeout)

    def _ray_start(self, host: TestHost, args: list[str], timeout: float) -> None:
        result = subprocess.run(
            [*host.exec_prefix, self.ray_bin, "start", *args, *self._node_args(host)],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **_QUIET},
        )  # fmt: skip
        if result.returncode != 0:
            output = result.stdout[-3000:] + result.stderr[-3000:]
            raise RuntimeError(f"ray start on host {host.index} failed:\n{output}")

    def kill_node(self, index: int) -> int:
        """SIGKILL host ``index``'s raylet (its node dies with everything on it); its PID."""
        found = subprocess.run(["ip", "netns", "pids", self.hosts.host(index).netns], capture_output=True, text=True)
        for pid in map(int, found.stdout.split()):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "raylet":
                    os.kill(pid, signal.SIGKILL)
                    return pid
        raise RuntimeError(f"no raylet on host {index}")

    def start_node(self, index: int, timeout: float = 120) -> None:
        """Start a worker node on host ``index`` again (after :meth:`kill_node`)."""
        self._ray_start(self.hosts.host(index), ["--address", self.address], timeout)

    def connect_driver(self, namespace: str | None = None) -> None:
        """Join this process to the cluster as a driver on host 1's node (``ray.init``, namespace-entered).

        Ray's threads and sockets are made inside host 1's network namespace; the calling thread returns
        to its own, so it keeps running ``ip`` and starting processes as before.
        """
        import ray

        with entered_netns(self.head.netns):
            ray.init(address=self.address, namespace=namespace, logging_level=logging.WARNING, log_to_driver=False,
                     _node_ip_address=self.head.address)  # fmt: skip
        self._driver = True

    def wait_nodes(self, count: int, timeout: float = 60.0) -> None:
        """Wait until exactly ``count`` nodes are alive (needs :meth:`connect_driver`).

        Exactly: a node whose raylet was killed stays alive in the GCS until its health checks fail, so a
        node started again on that host is counted only once the old one is seen dead.
        """
        import ray

        deadline = time.monotonic() + timeout
        while (alive := sum(node["Alive"] for node in ray.nodes())) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{alive} Ray nodes alive, not {count}, after {timeout} s")
            time.sleep(0.2)

    def stage_processes(self) -> dict[int, int]:
        """``{pid: host index}`` of every ``omni_pipeline.stage`` process on the test hosts."""
        found = {}
        for host in self.hosts.hosts:
            pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
            for pid in map(int, pids):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        if b"omni_pipeline.stage" in cmdline.read():
                            found[pid] = host.index
                except OSError:
                    continue
        return found

    def leftovers(self) -> dict[str, list[Any]]:
        """What runs of ``omni run`` left in the cluster (goal: nothing; needs :meth:`connect_driver`): replica
        actors not dead, placement groups not removed, payload owners of runs, stage processes."""
        import ray
        from ray.util.placement_group import placement_group_table

        from .owner import OWNER_PREFIX

        actors = [a for a in ray._private.state.actors().values()
                  if a["ActorClassName"] == "ReplicaHost" and a["State"] != "DEAD"]  # fmt: skip
        return {
            "replica actors": actors,
            "placement groups": [g for g in placement_group_table().values() if g["state"] != "REMOVED"],
            "payload owners": [a for a in ray.util.list_named_actors(all_namespaces=True)
                               if a["name"].startswith(OWNER_PREFIX) and a["namespace"].startswith("omni-run-")],
            "stage processes": list(self.stage_processes()),
        }  # fmt: skip

    def close(self) -> None:
        """Disconnect the driver, stop every Ray process (the test hosts go with them), remove the files."""
        if self._driver:
            import ray

            ray.shutdown()
            self._driver = False
        self.hosts.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
