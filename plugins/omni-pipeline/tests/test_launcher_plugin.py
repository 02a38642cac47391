"""A launcher plugin drives ``omni run`` through the launcher hook alone, with no local PID in sight.

The test launcher starts each replica with its control lines on a socket pair (as a Ray launcher relays them
through an actor): the orchestrator must need nothing but the :class:`omni_core.ReplicaHandle` contract.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from omni_pipeline.orchestrator import main
from omni_pipeline.testing import MARKER_ENV, edge_rows, replica_rows, run_processes

from omni_core import ChildGone, Launcher, LauncherRegistration, ReplicaHandle, get_plugin_registry, hookimpl

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "thinker_talker_vocoder.yaml"


class SocketReplica(ReplicaHandle):
    """A replica whose JSON lines travel over a socket; it never tells the orchestrator a PID."""

    def __init__(self, stage_id: str, replica_id: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        super().__init__()
        self.stage_id, self.replica_id, self.node, self.timeout = stage_id, replica_id, f"socket-node-{stage_id}", 30.0
        self._socket, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(argv, stdin=theirs, stdout=theirs, env={**os.environ, **env},
                                             start_new_session=True)

    @property
    def where(self) -> str:
        return f"socket {self._socket.fileno()}"

    def fileno(self) -> int:
        return self._socket.fileno()

    def _receive(self) -> bytes:
        try:
            return self._socket.recv(1 << 16)
        except OSError:
            return b""

    def _transmit(self, data: bytes) -> None:
        try:
            self._socket.sendall(data)
        except OSError as exc:
            raise ChildGone(f"{self} closed its socket") from exc

    def _gone(self) -> str:
        return "closed its socket"

    def kill(self) -> None:
        self._process.kill()
        self.close()

    def close(self) -> None:
        self.request_close()
        try:
            self._process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self.alive = False
        self._socket.close()


class SocketLauncher(Launcher):
    """Starts every replica on this machine, its control lines on a socket pair."""

    started: list[SocketReplica] = []

    @property
    def orchestrator_host(self) -> str:
        return "127.0.0.1"

    def start_replica(
        self, stage_id: str, replica_id: int, argv: Sequence[str], env: Mapping[str, str]
    ) -> ReplicaHandle:
        replica = SocketReplica(stage_id, replica_id, argv, env)
        SocketLauncher.started.append(replica)
        return replica

    def close(self) -> None:
        for replica in self.started:
            replica.close()


class SocketLauncherPlugin:
    @hookimpl
    def omni_register_launchers(self) -> list[LauncherRegistration]:
        return [LauncherRegistration("socketpair", f"{__name__}:SocketLauncher", "test: control lines on a socket")]


@pytest.fixture
def socket_launcher():
    registry = get_plugin_registry()
    registry.register_plugin(SocketLauncherPlugin(), name="socket-launcher", distribution="test-socket-launcher")
    SocketLauncher.started = []
    yield
    registry.unregister_plugin("socket-launcher")


def test_a_launcher_plugin_runs_the_pipeline_through_the_replica_handle_contract(
    socket_launcher, tmp_path, capsys, monkeypatch
):
    config = tmp_path / "small.yaml"
    config.write_text(EXAMPLE.read_text().replace("requests: 24", "requests: 6"))
    monkeypatch.setenv(MARKER_ENV, marker := f"launcher-test-{os.getpid()}")  # the replicas inherit it
    assert main(str(config), progress=False, launcher="socketpair") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert all(row[0] == "6" for row in edge_rows(out).values()) and len(edge_rows(out)) == 2
    assert replica_rows(out) == {f"stage {s} replica 0": (f"socket-node-{s}", 6) for s in range(3)}
    assert "host (socketpair launcher)" in out
    assert sorted((r.stage_id, r.replica_id) for r in SocketLauncher.started) == [("0", 0), ("1", 0), ("2", 0)]
    assert not run_processes(marker), "a replica outlived the run"


def test_a_launcher_target_that_is_not_a_launcher_is_named(socket_launcher, tmp_path, capsys):
    class NotALauncher:
        @hookimpl
        def omni_register_launchers(self) -> list[LauncherRegistration]:
            return [LauncherRegistration("bogus", f"{__name__}:SocketReplica")]

    registry = get_plugin_registry()
    registry.register_plugin(NotALauncher(), name="bogus-launcher", distribution="test-bogus")
    try:
        assert main(str(EXAMPLE), progress=False, launcher="bogus") == 1
    finally:
        registry.unregister_plugin("bogus-launcher")
    assert "is not an omni_core.Launcher subclass" in capsys.readouterr().err
