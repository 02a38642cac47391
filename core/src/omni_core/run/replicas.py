"""Stage replica processes of ``omni run`` and how requests are routed to them."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any


class RunFailed(RuntimeError):
    """The run could not complete; the message names the stage or edge at fault."""


class Replica:
    """One stage worker process and its JSON-lines control pipes."""

    def __init__(self, config_path: str, stage_id: str, replica_id: int, coordinator: str | None) -> None:
        self.stage_id = stage_id
        self.replica_id = replica_id
        self.address = f"omni-run://stage-{stage_id}/replica-{replica_id}"
        command = [sys.executable, "-m", "omni_core.run.stage", config_path, stage_id]
        if coordinator:
            command += [coordinator, self.address]
        # one torch thread: stages move data, and idle torch workers spinning on few cores starve the others
        env = {"OMP_NUM_THREADS": "1", **os.environ, "OMNI_REPLICA_ID": str(replica_id)}
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.alive = True
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []

    @property
    def label(self) -> str:
        return f"stage {self.stage_id} replica {self.replica_id} (pid {self.proc.pid})"

    def pump(self) -> bool:
        """Read what the worker wrote into ``lines``; False once it closed its output."""
        chunk = os.read(self.fd, 1 << 16)
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(json.loads(line) for line in complete if line)
        return bool(chunk)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.alive = False

    def kill(self) -> None:
        """SIGKILL the worker (fault injection)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.alive = False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send({"op": "stop"})
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.alive = False
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class Router:
    """Picks a live replica of a stage: by the coordinator's list and policy, or round robin without one."""

    def __init__(self, replicas: dict[str, list[Replica]], coordinator: dict[str, Any] | None) -> None:
        self.replicas = replicas
        self._turn: defaultdict[str, itertools.count[int]] = defaultdict(itertools.count)
        self.runtime = self.hub = self.balancer = None
        if coordinator is not None:
            from omni_coordinator import OmniCoordClientForHub, OmniCoordinatorRuntime, build_load_balancer_factory

            self.balancer = build_load_balancer_factory(coordinator["policy"])()
            self.runtime = OmniCoordinatorRuntime(host="127.0.0.1", heartbeat_timeout=coordinator["heartbeat_timeout"])
            self.hub = OmniCoordClientForHub(self.runtime.pub_address)

    @property
    def coordinator_address(self) -> str | None:
        return self.runtime.router_address if self.runtime is not None else None

    def listed(self, stage: str) -> list[Any]:
        """UP replicas the coordinator publishes for ``stage`` (ReplicaInfo records)."""
        assert self.hub is not None
        return [r for r in self.hub.get_replicas_for_stage(int(stage)).replicas if r.status.value == "up"]

    def wait_registered(self, timeout: float) -> None:
        """Block until the coordinator lists every live replica."""
        if self.hub is None:
            return
        deadline = time.monotonic() + timeout
        for stage, replicas in self.replicas.items():
            want = {r.address for r in replicas}
            while not want <= {r.input_addr for r in self.listed(stage)}:
                if time.monotonic() > deadline:
                    missing = sorted(want - {r.input_addr for r in self.listed(stage)})
                    raise RunFailed(f"stage {stage}: replicas {missing} did not register with the coordinator")
                time.sleep(0.05)

    def pick(self, stage: str, request_id: str) -> Replica:
        alive = [r for r in self.replicas[stage] if r.alive]
        if not alive:
            raise RunFailed(f"stage {stage}: no live replica left")
        if self.hub is None or self.balancer is None:
            return alive[next(self._turn[stage]) % len(alive)]
        by_address = {r.address: r for r in alive}
        candidates = [info for info in self.listed(stage) if info.input_addr in by_address] or [
            _StandIn(r.address)
            for r in alive  # coordinator has not caught up yet
        ]
        index = self.balancer.select({"request_id": request_id}, candidates)
        return by_address[candidates[index].input_addr]

    def close(self) -> None:
        if self.hub is not None:
            self.hub.close()
        if self.runtime is not None:
            self.runtime.close()


class _StandIn:
    """A replica the coordinator has not listed yet, shaped like a ReplicaInfo for the balancer."""

    def __init__(self, address: str) -> None:
        self.input_addr = address
        self.queue_length = 0
