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
