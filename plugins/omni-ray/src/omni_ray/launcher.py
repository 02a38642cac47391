"""The ``ray`` launcher of ``omni run``: every stage replica a Ray actor, placed by the config's ``placement``.

``omni run CONFIG --launcher ray`` (or ``launcher: ray``) joins the cluster at ``RAY_ADDRESS`` (``omni run
--ray-address`` sets it), or starts a local one-node Ray when none is given.  Each replica is a
:class:`~omni_ray.replica_host.ReplicaHost` actor that runs the stage command with the node's Python, its
control lines on a TCP connection back to this process.  Placement, per stage (``placement.stages.S``):

- ``host``: on the node whose address is the host's ``address`` (hard node affinity);
- ``resources`` / ``labels``: on a node offering these custom resources / carrying these labels;
- ``num_cpus`` / ``num_gpus``: reserved per replica (Ray sets ``CUDA_VISIBLE_DEVICES``);
- ``placement.strategy`` (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD): one placement group with a bundle per
  replica of every stage, each bundle shaped by its stage's keys, reserved before the first replica starts.

Each replica gets ``OMNI_REPLICA_ID``, ``OMNI_HOST_IP`` (its node's address) and ``OMNI_RAY_NAMESPACE``, a Ray
namespace of the run's own for ``RayConnector``'s payload owners.  :meth:`RayLauncher.close` (on exit, Ctrl-C
and failure alike) kills every actor, removes the placement group and the run's payload owners, and
disconnects (stopping the local Ray if it started one).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from omni_core import ChildGone, ConfigError, Launcher, Placement, ReplicaHandle, StagePlacement

from .connector import NAMESPACE_ENV
from .owner import remove_payload_owners
from .ray_utils import (
    actor_class,
    create_placement_group,
    initialize_ray_cluster,
    node_ips,
    node_summaries,
    remove_placement_group,
)
from .replica_host import CONNECT_TIMEOUT_S, ReplicaHost, ReplicaListener

#: Seconds a replica has to exit after it was asked to close, before its command gets SIGTERM (then SIGKILL).
CLOSE_GRACE_S = 2.0
#: CPU of a placement-group bundle whose stage asks for none (a bundle cannot be empty).
BUNDLE_CPU = 0.01
#: Seconds a placement group may take to be placed.
PLACEMENT_TIMEOUT_S = 60.0
_NODE_ID_LABEL = "ray.io/node-id"


class RayReplica(ReplicaHandle):
    """A stage replica in a :class:`ReplicaHost` actor; its JSON lines travel over the TCP connection it opened."""

    def __init__(self, stage_id: str, replica_id: int, actor: Any, started: Any, listener: ReplicaListener) -> None:
        super().__init__()
        self.stage_id, self.replica_id = stage_id, replica_id
        self.timeout = CLOSE_GRACE_S
        self.actor, self._started, self._listener = actor, started, listener
        self._info: dict[str, Any] = {}

    # -- where it runs ---------------------------------------------------------------
    @property
    def node(self) -> str:  # type: ignore[override]
        """Its node's address, for the result table."""
        return self._placed().get("node_ip", "(not placed)")

    @property
    def where(self) -> str:
        info = self._info
        return f"actor {self.actor._actor_id.hex()[:8]}" + (f" on node {info['node_ip']}" if info else "")

    def _placed(self) -> dict[str, Any]:
        if not self._info:
            with contextlib.suppress(RayError):
                self._info = ray.get(self._started, timeout=0)
        return self._info

    # -- the transport ---------------------------------------------------------------
    def fileno(self) -> int:
        return self._connection().fileno()

    def _connection(self) -> Any:
        """The replica's connection, once its actor is placed and connected back (failures name the stage)."""
        if self._listener.conn is not None:
            return self._listener.conn
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while True:
            ready, _ = ray.wait([self._started], timeout=0)
            if ready:
                try:
                    self._info = ray.get(self._started)
                except RayError as exc:
                    raise RuntimeError(f"{self.label} could not start: {exc}") from exc
                return self._listener.accept(timeout=max(1.0, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label} was not placed within {CONNECT_TIMEOUT_S:.0f} s; nodes: "
                                   f"{'; '.join(node_summaries())}")  # fmt: skip
            time.sleep(0.05)

    def _receive(self) -> bytes:
        try:
            return self._connection().recv(1 << 16)
        except OSError:
            return b""

    def _transmit(self, data: bytes) -> None:
        try:
            self._connection().sendall(data)
        except (OSError, RuntimeError) as exc:
            raise ChildGone(f"{self} is gone") from exc

    def _gone(self) -> str:
        node = self._info.get("node_id")
        if node is not None and node not in node_ips():
            return f"was lost with its node {self._info['node_ip']}"
        try:
            code = ray.get(self.actor.wait.remote(), timeout=5)
        except (RayError, GetTimeoutError):
            return "was lost with its actor"
        return "closed its connection" if code is None else f"exited with code {code}"

    # -- stopping ------------------------------------------------------------------------
    def kill(self) -> None:
        """Kill the actor (its command dies with it) at once."""
        self.alive = False
        with contextlib.suppress(RayError, ValueError):
            ray.kill(self.actor, no_restart=True)
        self._listener.close()

    def close(self) -> None:
        """Ask the replica to close and wait :data:`CLOSE_GRACE_S` for it (reading what it still writes); then stop
        its command (SIGTERM, then SIGKILL) and kill the actor."""
        if self.alive and self._listener.conn is not None:
            self.request_close()
            deadline = time.monotonic() + CLOSE_GRACE_S
            with contextlib.suppress(ChildGone, OSError, ValueError):
                while time.monotonic() < deadline:
                    if select.select([self.fileno()], [], [], deadline - time.monotonic())[0] and not self.pump():
                        break
            with contextlib.suppress(RayError, GetTimeoutError):
                ray.get(self.actor.stop.remote(CLOSE_GRACE_S), timeout=3 * CLOSE_GRACE_S)
        self.kill()


class RayLauncher(Launcher):
    """Starts each stage replica as a Ray actor where the placement says; removes all it made on :meth:`close`."""

    def __init__(self, placement: Placement, replicas: Mapping[str, int]) -> None:
        super().__init__(placement, replicas)
        self.started: list[RayReplica] = []
        self.group: PlacementGroup | None = None
        self._connected = initialize_ray_cluster()
        self.namespace = f"omni-run-{uuid.uuid4().hex[:12]}"
        self._saved_namespace = os.environ.get(NAMESPACE_ENV)
        os.environ[NAMESPACE_ENV] = self.namespace  # the orchestrator's own connectors use it too
        try:
            self._nodes = {ip: node_id for node_id, ip in node_ips().items()}
            self._check_feasible()
            self._bundles = self._reserve()
        except BaseException:
            self.close()
            raise

    @property
    def orchestrator_host(self) -> str:
        """This process's node address: replicas on every node reach the runner there."""
        return ray.util.get_node_ip_address()

    def start_replica(self, stage_id: str, replica_id: int, argv: Sequence[str], env: Mapping[str, str]) -> RayReplica:
        """Create the replica's actor and have it run ``argv`` (``python -m ...``, with the node's Python)."""
        listener = ReplicaListener(self.orchestrator_host)
        options = self._actor_options(stage_id, replica_id)
        actor = actor_class(ReplicaHost).options(**options).remote()
        replica_env = {**env, NAMESPACE_ENV: self.namespace}
        started = actor.start.remote(list(argv[1:]), replica_env, listener.address, listener.token)
        replica = RayReplica(stage_id, replica_id, actor, started, listener)
        self.started.append(replica)
        return replica

    def close(self) -> None:
        """Kill every actor, remove the placement group and the run's payload owners, disconnect (idempotent)."""
        for replica in self.started:
            replica.kill()
        self.started.clear()
        remove_placement_group(self.group)
        self.group = None
        if ray.is_initialized():
            with contextlib.suppress(RayError):
                remove_payload_owners(self.namespace)
            if self._connected:
                ray.shutdown()
                self._connected = False
        if self._saved_namespace is None:
            os.environ.pop(NAMESPACE_ENV, None)
        else:
            os.environ[NAMESPACE_ENV] = self._saved_namespace

    # -- placement -------------------------------------------------------------------------
    def _check_feasible(self) -> None:
        """ConfigError naming every stage that no node of the cluster could ever take (Ray would wait forever)."""
        nodes = [n for n in ray.nodes() if n["Alive"]]
        faults = []
        for sid, stage in sorted(self.placement.stages.items()):
            need = {k: v for k, v in {**bundle_shape(stage), "CPU": stage.num_cpus or 0}.items() if v}
            if not any(_offers(node, need, stage) for node in nodes):
                wanted = ", ".join(
                    [f"{k}: {v:g}" for k, v in need.items()] + [f"label {k}={v}" for k, v in stage.labels.items()]
                    + ([f"host {stage.host.name} ({stage.host.address})"] if stage.host else [])
                )  # fmt: skip
                faults.append(f"placement.stages.{sid}: no node of the Ray cluster offers {wanted} per replica")
        if faults:
            raise ConfigError("; ".join(faults) + f"; nodes: {'; '.join(node_summaries())}")

    def _reserve(self) -> dict[tuple[str, int], int]:
        """With ``placement.strategy``: one placement group, a bundle per replica; ``{(stage, replica): index}``."""
        if self.placement.strategy is None:
            return {}
        order = [(sid, r) for sid in sorted(self.replicas, key=int) for r in range(self.replicas[sid])]
        shapes = [bundle_shape(self.placement.for_stage(sid)) for sid, _ in order]
        selectors = [self._bundle_selector(sid) for sid, _ in order]
        self.group = create_placement_group(
            len(order), strategy=self.placement.strategy, bundles=shapes, label_selectors=selectors,
            timeout_s=PLACEMENT_TIMEOUT_S,
        )  # fmt: skip
        return {key: index for index, key in enumerate(order)}

    def _bundle_selector(self, stage_id: str) -> dict[str, str]:
        stage = self.placement.for_stage(stage_id)
        selector = dict(stage.labels)
        if stage.host is not None:
            selector[_NODE_ID_LABEL] = self._node_of(stage_id, stage)
        return selector

    def _node_of(self, stage_id: str, stage: StagePlacement) -> str:
        assert stage.host is not None
        node_id = self._nodes.get(stage.host.address)
        if node_id is None:
            raise ConfigError(
                f"placement.stages.{stage_id}.host: no Ray node at {stage.host.address} (host {stage.host.name}); "
                f"nodes: {', '.join(sorted(self._nodes)) or 'none'}"
            )
        return node_id

    def _actor_options(self, stage_id: str, replica_id: int) -> dict[str, Any]:
        stage = self.placement.for_stage(stage_id)
        options: dict[str, Any] = {
            "num_cpus": stage.num_cpus or 0,
            "num_gpus": stage.num_gpus or 0,
            "resources": dict(stage.resources),
        }
        index = self._bundles.get((stage_id, replica_id))
        if index is not None and self.group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(self.group, index)
            return options
        if stage.labels:
            options["label_selector"] = dict(stage.labels)
        if stage.host is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self._node_of(stage_id, stage), soft=False)
        return options


def _offers(node: Mapping[str, Any], need: Mapping[str, float], stage: StagePlacement) -> bool:
    """Whether ``node`` (a ``ray.nodes()`` entry) has ``need`` in total, ``stage``'s labels and host address."""
    labels = node.get("Labels") or {}
    return (
        all(node["Resources"].get(name, 0) >= amount for name, amount in need.items())
        and all(labels.get(k) == v for k, v in stage.labels.items())
        and (stage.host is None or node["NodeManagerAddress"] == stage.host.address)
    )


def bundle_shape(stage: StagePlacement) -> dict[str, float]:
    """The placement-group bundle of one replica of ``stage``: its CPUs (a token amount if none), GPUs, resources."""
    shape = {"CPU": stage.num_cpus or BUNDLE_CPU, **stage.resources}
    if stage.num_gpus:
        shape["GPU"] = stage.num_gpus
    return shape
