"""Helpers for running pipeline stages on a Ray cluster (upstream's ``vllm_omni.distributed.ray_utils``).

- joining a cluster: :func:`is_ray_initialized`, :func:`initialize_ray_cluster`;
- placement groups for stages: :func:`create_placement_group`, :func:`remove_placement_group`,
  :func:`bundle_node_ips`, and :func:`kill_ray_actor`;
- node IP lookup: :func:`get_node_ip`, :func:`node_ips`;
- the environment of a stage replica: :func:`stage_env`.

Unlike upstream, bundles are not hard-coded to one GPU each, a bad strategy is refused up front, and a
placement group that cannot be placed is removed and reported with what the cluster has.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group_table

from omni_core import ConfigError

from . import session

logger = logging.getLogger("omni.ray")

#: Ray's placement strategies: PACK/SPREAD are best effort, the STRICT_ ones fail rather than bend.
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
#: Environment variables a stage replica reads (core reads the replica id and, for ``host: auto``, the IP).
STAGE_ID_ENV = "OMNI_STAGE_ID"
REPLICA_ID_ENV = "OMNI_REPLICA_ID"
HOST_IP_ENV = "OMNI_HOST_IP"


def is_ray_initialized() -> bool:
    """Whether this process is connected to Ray (a driver after ``ray.init``, or any Ray worker)."""
    return ray.is_initialized()


def initialize_ray_cluster(address: str | None = None, *, namespace: str | None = None) -> bool:
    """Connect this process to Ray: ``address``, else ``RAY_ADDRESS``, else start a local one-node Ray (files
    under ``RAY_TMPDIR``, default /tmp/ray; ``ray.shutdown()`` stops it).

    Returns True if it connected now, False if the process already was (nothing changes then).
    """
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        session.join(target, 30.0, "initialize_ray_cluster", "`address` or RAY_ADDRESS", namespace=namespace)
    else:
        ray.init(namespace=namespace, logging_level=logging.WARNING)
    return True


def create_placement_group(
    number_of_stages: int,
    address: str | None = None,
    strategy: str = "PACK",
    *,
    bundle: Mapping[str, float] | None = None,
    bundles: Sequence[Mapping[str, float]] | None = None,
    label_selectors: Sequence[Mapping[str, str]] | None = None,
    name: str = "",
    timeout_s: float = 60.0,
) -> PlacementGroup:
    """A placement group of one bundle per stage, placed by ``strategy``.

    Every bundle is ``bundle`` (default ``{"CPU": 1}``), or ``bundles`` gives each its own shape;
    ``label_selectors`` (one per bundle) restricts a bundle to nodes with those labels (``ray.io/node-id``
    names a node).  Waits until it is placed; if it cannot be within ``timeout_s`` it is removed and
    TimeoutError says what was asked and what each node has.  Joins ``address`` (see
    :func:`initialize_ray_cluster`) first if this process is not connected.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"placement strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if number_of_stages < 1:
        raise ConfigError(f"number_of_stages must be >= 1, got {number_of_stages}")
    shapes = [dict(b) for b in bundles] if bundles is not None else [dict(bundle or {"CPU": 1.0})] * number_of_stages
    selectors = [dict(s) for s in label_selectors] if label_selectors and any(label_selectors) else None
    for what, given in (("bundles", shapes), ("label_selectors", selectors)):
        if given is not None and len(given) != number_of_stages:
            raise ConfigError(f"{what}: {len(given)} given for {number_of_stages} stages")
    initialize_ray_cluster(address)
    group = ray.util.placement_group(shapes, strategy=strategy, name=name, bundle_label_selector=selectors)
    if not group.wait(timeout_s):
        remove_placement_group(group)
        wanted = shapes[0] if all(s == shapes[0] for s in shapes) else shapes
        raise TimeoutError(
            f"placement group of {number_of_stages} x {wanted} ({strategy}"
            f"{f', labels {selectors}' if selectors else ''}) was not placed within {timeout_s} s; "
            f"nodes: {'; '.join(node_summaries())}"
        )
    return group


def remove_placement_group(group: PlacementGroup | None) -> None:
    """Remove ``group`` (its bundles' resources are freed; actors in it are killed); None is ignored."""
    if group is None:
        return
    try:
        ray.util.remove_placement_group(group)
    except Exception as exc:  # already removed, or the cluster is gone: nothing left to free
        logger.warning("could not remove placement group %s: %s", group.id.hex(), exc)


def kill_ray_actor(actor: Any) -> None:
    """Kill ``actor`` now (no restart); None or an actor that is already dead is ignored."""
    if actor is None:
        return
    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:
        logger.warning("could not kill actor: %s", exc)


def bundle_node_ips(group: PlacementGroup) -> list[str]:
    """The IP of the node each bundle of the (placed) ``group`` is on, in bundle order."""
    placed = placement_group_table(group)["bundles_to_node_id"]
    ips = node_ips()
    return [ips[placed[index]] for index in range(len(placed))]


def get_node_ip(node_id: str | None = None) -> str:
    """The IP of node ``node_id`` (default: the node this process runs on)."""
    if node_id is None:
        return ray.util.get_node_ip_address()
    try:
        return node_ips()[node_id]
    except KeyError:
        raise ValueError(f"no live Ray node {node_id!r}") from None


def node_ips() -> dict[str, str]:
    """``{node_id: ip}`` of every live node of the cluster."""
    return {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}


def stage_env(
    stage_id: int | str, replica_id: int = 0, *, node_ip: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of replica ``replica_id`` of stage ``stage_id`` running on the node at ``node_ip``.

    ``OMNI_STAGE_ID``, ``OMNI_REPLICA_ID`` (core's replica id: ports and ranks) and ``OMNI_HOST_IP`` (what
    connectors configured with ``host: auto`` advertise: the node's cluster address), plus ``extra``.
    ``node_ip`` defaults to this process's node: call it where the stage runs, or pass the bundle's IP.
    """
    env = {
        STAGE_ID_ENV: str(stage_id),
        REPLICA_ID_ENV: str(replica_id),
        HOST_IP_ENV: node_ip or get_node_ip(),
    }
    env.update(extra or {})
    return env


@functools.cache
def actor_class(body: type) -> Any:
    """``ray.remote(body)``, made once per class (Ray exports the class again each time it wraps it)."""
    return ray.remote(body)


def node_summaries() -> list[str]:
    """``"IP {resources} {labels}"`` of every live node, for messages about placement."""
    return [f"{n['NodeManagerAddress']} {n['Resources']} {n.get('Labels', {})}" for n in ray.nodes() if n["Alive"]]
