"""Fixtures: one real Ray cluster on three test hosts per session, this process a driver on host 1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from omni_core import ConnectorSpec
from omni_ray.testing import RayTestCluster


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayTestCluster]:
    """Head on host 1, worker nodes on hosts 2 and 3; this process joined as a driver on host 1."""
    with RayTestCluster.for_test(3) as cluster:
        cluster.connect_driver()
        cluster.wait_nodes(3)
        yield cluster
        assert_nothing_left()


def assert_nothing_left() -> None:
    """No payload owner and no placement group outlives the tests that made them."""
    import ray
    from ray.util.placement_group import placement_group_table

    from omni_ray.owner import OWNER_PREFIX

    owners = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(OWNER_PREFIX)]
    groups = [g for g in placement_group_table().values() if g["state"] != "REMOVED"]
    assert owners == [] and groups == [], f"left behind: owners {owners}, placement groups {groups}"


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def namespace(ray_cluster: RayTestCluster) -> Iterator[str]:
    """A Ray namespace of the test's own; its payload owners are removed after the test."""
    from omni_ray import remove_payload_owners

    name = new_namespace()
    yield name
    remove_payload_owners(name)


def ray_spec(cluster: RayTestCluster, namespace: str, **extra: object) -> ConnectorSpec:
    return ConnectorSpec("RayConnector", {"address": cluster.address, "namespace": namespace, **extra})
