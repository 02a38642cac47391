"""How ``omni run`` picks the replica of a stage that handles a request: round robin, or through a coordinator.

The coordinator comes from a plugin's ``omni_register_coordinators`` hook (omni-coordinator's, usually),
reached through its registration's lazy targets: this package never imports the plugin.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni_core import ConfigError, CoordinatorRegistration, ReplicaHandle, get_plugin_registry, import_target


class RunFailed(RuntimeError):
    """The run could not complete; the message names the stage or edge at fault."""


@dataclass(frozen=True)
class CoordinatorSettings:
    """The ``coordinator`` section: which registered coordinator, its load-balancing policy, heartbeat timeout."""

    registration: CoordinatorRegistration
    policy: str = "round-robin"
    heartbeat_timeout: float = 5.0

    @classmethod
    def from_config(cls, raw: Any) -> CoordinatorSettings | None:
        """Parse ``coordinator:`` (None if absent); errors name the key, the policy or the missing plugin."""
        if raw is None:
            return None
        keys = ("name", "policy", "heartbeat_timeout")
        if not isinstance(raw, Mapping) or set(raw) - set(keys):
            shape = "{policy: NAME, heartbeat_timeout: SECONDS, name: NAME}"
            raise ConfigError(f"coordinator must be {shape}, got {raw!r}")
        timeout = raw.get("heartbeat_timeout", cls.heartbeat_timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"coordinator.heartbeat_timeout must be a positive number, got {timeout!r}")
        settings = cls(_registration(raw.get("name")), str(raw.get("policy", cls.policy)), float(timeout))
        settings.balancer_factory()  # an unknown policy fails here, before anything starts
        return settings

    def balancer_factory(self) -> Any:
        return import_target(self.registration.load_balancer)(self.policy)


def _registration(name: Any) -> CoordinatorRegistration:
    registry = get_plugin_registry()
    if name is not None:
        return registry.select("coordinator", str(name))[0]
    found = registry.coordinators()
    if len(found) == 1:
        return found[0][0]
    if not found:
        raise ConfigError("coordinator: no coordinator plugin is installed; pip install 'omni-core[coordinator]'")
    names = ", ".join(sorted(reg.name for reg, _ in found))
    raise ConfigError(f"coordinator: several coordinators are installed ({names}); choose one with coordinator.name")


class Router:
    """Picks a live replica of a stage: by the coordinator's list and policy, or round robin without one.

    With ``coordinator`` it starts the coordinator, bound to ``host`` (where the replicas reach this process).
    """

    def __init__(
        self, replicas: dict[str, list[ReplicaHandle]], coordinator: CoordinatorSettings | None, host: str
    ) -> None:
        self.replicas = replicas
        self.settings = coordinator
        self._turn: defaultdict[str, itertools.count[int]] = defaultdict(itertools.count)
        self.runtime = self.hub = self.balancer = None
        if coordinator is not None:
            self.balancer = coordinator.balancer_factory()()
            targets = coordinator.registration
            self.runtime = import_target(targets.runtime)(host=host, heartbeat_timeout=coordinator.heartbeat_timeout)
            self.hub = import_target(targets.hub_client)(self.runtime.pub_address)

    def replica_options(self, address: str) -> list[str]:
        """The stage command-line options that register replica ``address`` with the coordinator (if any)."""
        if self.runtime is None or self.settings is None:
            return []
        return ["--coordinator", self.settings.registration.name, self.runtime.router_address, "--address", address]

    def listed(self, stage: str) -> list[Any]:
        """UP replicas the coordinator publishes for ``stage`` (records with ``input_addr`` and ``queue_length``)."""
        assert self.hub is not None
        return [r for r in self.hub.get_replicas_for_stage(int(stage)).replicas if r.status.value == "up"]

    def wait_registered(self, timeout: float) -> None:
        """Block until the coordinator lists every live replica."""
        if self.hub is None:
            return
        deadline = time.monotonic() + timeout
        for stage, replicas in self.replicas.items():
            want = {address_of(r.stage_id, r.replica_id) for r in replicas}
            while not want <= {r.input_addr for r in self.listed(stage)}:
                if time.monotonic() > deadline:
                    missing = sorted(want - {r.input_addr for r in self.listed(stage)})
                    raise RunFailed(f"stage {stage}: replicas {missing} did not register with the coordinator")
                time.sleep(0.05)

    def pick(self, stage: str, request_id: str) -> ReplicaHandle:
        alive = [r for r in self.replicas[stage] if r.alive]
        if not alive:
            lost = "; ".join(r.label for r in self.replicas[stage])
            raise RunFailed(f"stage {stage}: no live replica left (lost: {lost})")
        if self.hub is None or self.balancer is None:
            return alive[next(self._turn[stage]) % len(alive)]
        by_address = {address_of(r.stage_id, r.replica_id): r for r in alive}
        candidates = [info for info in self.listed(stage) if info.input_addr in by_address] or [
            _StandIn(address)
            for address in by_address  # the coordinator has not caught up yet
        ]
        index = self.balancer.select({"request_id": request_id}, candidates)
        return by_address[candidates[index].input_addr]

    def close(self) -> None:
        if self.hub is not None:
            self.hub.close()
        if self.runtime is not None:
            self.runtime.close()


def address_of(stage_id: str, replica_id: int) -> str:
    """The address replica ``replica_id`` of stage ``stage_id`` registers under with the coordinator."""
    return f"omni-run://stage-{stage_id}/replica-{replica_id}"


class _StandIn:
    """A replica the coordinator has not listed yet, shaped like a ReplicaInfo for the balancer."""

    def __init__(self, address: str) -> None:
        self.input_addr = address
        self.queue_length = 0
