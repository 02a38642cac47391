"""Stage replicas as Ray actors: the actor runs the replica's command on its node, wired to the runner by TCP.

The runner (``omni run --launcher ray``) listens on one port per replica (:class:`ReplicaListener`) and creates
a :class:`ReplicaHost` actor where the placement says.  The actor connects back, says the replica's one-time
token, and starts the replica's command with that connection as its stdin and stdout, so the runner drives it
with JSON lines exactly as a local child process.  The command dies with the actor (``PR_SET_PDEATHSIG``):
killing the actor, removing its placement group or losing its node stops the replica too.
"""

from __future__ import annotations

import contextlib
import ctypes
import hmac
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import ray

_PR_SET_PDEATHSIG = 1
#: Seconds the runner waits for a replica's actor to connect back (actor start and placement included).
CONNECT_TIMEOUT_S = 120.0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the actor's process (its parent) dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ReplicaHost:
    """The actor body: one replica's command, started on this actor's node (use through ``ray.remote``)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def start(
        self, python_args: Sequence[str], env: Mapping[str, str], runner: tuple[str, int], token: str
    ) -> dict[str, Any]:
        """Connect to the runner, send ``token``, run ``python PYTHON_ARGS`` (this node's Python) on the connection.

        Returns ``{"node_ip", "node_id", "pid"}``.  The command gets ``OMNI_HOST_IP`` (this node's address),
        ``RAY_ADDRESS`` (this actor's cluster, so its connectors join it and no other) and ``env`` on top of the
        actor's environment (which holds ``CUDA_VISIBLE_DEVICES`` when it has GPUs).
        """
        node_ip = ray.util.get_node_ip_address()
        conn = socket.create_connection(runner, timeout=30)
        try:
            conn.settimeout(None)
            conn.sendall(token.encode() + b"\n")
            here = {"OMNI_HOST_IP": node_ip, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
            child_env = {"OMP_NUM_THREADS": "1", **os.environ, **here, **env}
            with self._lock:
                # the thread that forks must outlive the child for PDEATHSIG: this actor serves one call at a time
                # on its main thread, which lives as long as the actor
                self._proc = subprocess.Popen(
                    [sys.executable, *python_args],
                    stdin=conn.fileno(),
                    stdout=conn.fileno(),
                    env=child_env,
                    preexec_fn=_die_with_parent,
                )
        finally:
            conn.close()  # the child holds its own copy
        return {"node_ip": node_ip, "node_id": ray.get_runtime_context().get_node_id(), "pid": self._proc.pid}

    def wait(self) -> int | None:
        """The command's exit code once it exited, else None (never blocks)."""
        with self._lock:
            return None if self._proc is None else self._proc.poll()

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM the command, SIGKILL it after ``grace_s``; its exit code."""
        with self._lock:
            proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


class ReplicaListener:
    """The runner's end of one replica's connection: a port on ``host`` that accepts the replica's actor once."""

    def __init__(self, host: str) -> None:
        self.token = secrets.token_hex(16)
        self._server = socket.create_server((host, 0))
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self.conn: socket.socket | None = None

    def accept(self, timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
        """The replica's connection, once its actor connected and said the token (TimeoutError, PermissionError)."""
        if self.conn is not None:
            return self.conn
        self._server.settimeout(timeout)
        try:
            conn, _ = self._server.accept()
        finally:
            self._server.close()
        conn.settimeout(timeout)
        said = b""
        while not said.endswith(b"\n") and len(said) <= len(self.token) + 1:
            chunk = conn.recv(len(self.token) + 1 - len(said))
            if not chunk:
                break
            said += chunk
        if not hmac.compare_digest(said.strip(), self.token.encode()):
            conn.close()
            raise PermissionError(f"a connection to {self.address} did not say the replica's token")
        conn.settimeout(None)
        self.conn = conn
        return conn

    def close(self) -> None:
        self._server.close()
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
