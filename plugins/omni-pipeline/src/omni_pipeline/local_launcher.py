"""The built-in ``local`` launcher: every stage replica a child process, here or on a named host.

A replica whose stage is placed on a host (``placement.stages.S.host``) runs under that host's ``exec`` prefix
(``[ssh, h1]``, ``[ip, netns, exec, ns1]``) with ``OMNI_HOST_IP`` set to the host's address, passed through
``env`` so it survives prefixes that do not forward the environment (ssh); the prefix must start the same Python
with the config at the same path.  Replicas run in their own session: the terminal's Ctrl-C reaches only the
runner, which closes them in order.  The local launcher honours ``host`` only.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

from omni_core import HostSpec, JsonLinesChild, Launcher, Placement, ReplicaHandle, resolve_host

#: Seconds a replica has to exit when asked to close before it gets SIGTERM: one busy with a request (a long get)
#: closes its connectors on SIGTERM, one already closing them ignores it; SIGKILL follows 5 s later.
CLOSE_GRACE_S = 2.0


class LocalReplica(JsonLinesChild, ReplicaHandle):
    """A stage replica in a child process (its stdin and stdout carry the JSON lines)."""

    def __init__(
        self, stage_id: str, replica_id: int, command: list[str], env: Mapping[str, str], host: HostSpec | None
    ) -> None:
        self.stage_id = stage_id
        self.replica_id = replica_id
        self.host = host
        self.node = f"{host.name} ({host.address})" if host else socket.gethostname()
        super().__init__(command, timeout=CLOSE_GRACE_S, env=dict(env), wait=False, start_new_session=True)

    @property
    def where(self) -> str:
        return f"pid {self.pid}" + (f" on {self.host.name}" if self.host else "")

    __repr__ = ReplicaHandle.__repr__


class LocalLauncher(Launcher):
    """Starts each replica as a child process; removes every one it started on :meth:`close`."""

    def __init__(self, placement: Placement, replicas: Mapping[str, int]) -> None:
        super().__init__(placement, replicas)
        self.started: list[LocalReplica] = []

    @property
    def orchestrator_host(self) -> str:
        """127.0.0.1 while every replica runs here; this host's address once a stage is placed on a host."""
        placed = any(stage.host is not None for stage in self.placement.stages.values())
        return resolve_host(None) if placed else "127.0.0.1"

    def start_replica(
        self, stage_id: str, replica_id: int, argv: Sequence[str], env: Mapping[str, str]
    ) -> LocalReplica:
        host = self.placement.for_stage(stage_id).host
        command, replica_env = list(argv), dict(env)
        if host is not None:
            replica_env["OMNI_HOST_IP"] = host.address
            if host.exec:
                command = [*host.exec, "env", *(f"{k}={v}" for k, v in replica_env.items()), *command]
        replica = LocalReplica(stage_id, replica_id, command, replica_env, host)
        self.started.append(replica)
        return replica

    def close(self) -> None:
        """Kill every replica still running (the runner has asked each to close first)."""
        for replica in self.started:
            replica.kill()
