"""omni-core's conformance kit, run against RayConnector inside a real three-node Ray cluster.

Connectors the kit makes in this process run on host 1's node; the kit's child processes run on host 2's,
so every put-in-child / get-in-parent test crosses nodes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import new_namespace, ray_spec

from omni_core import ConnectorSpec
from omni_core.testing import ChildConnector, ConnectorConformanceTests
from omni_ray import remove_payload_owners
from omni_ray.testing import RayTestCluster


@pytest.fixture(scope="module")
def kit_namespace(ray_cluster: RayTestCluster) -> Iterator[str]:
    name = new_namespace()
    yield name
    remove_payload_owners(name)


class TestRayConnectorConformance(ConnectorConformanceTests):
    cluster: RayTestCluster

    @pytest.fixture
    def connector_spec(self, ray_cluster: RayTestCluster, kit_namespace: str) -> ConnectorSpec:
        type(self).cluster = ray_cluster
        return ray_spec(ray_cluster, kit_namespace)

    def child_connector(self, spec: ConnectorSpec) -> ChildConnector:
        """Children run on host 2: a separate node of the cluster."""
        return self.cluster.hosts.host(2).child_connector(spec)


class TestRayConnectorZeroCopyConformance(TestRayConnectorConformance):
    @pytest.fixture
    def connector_spec(self, ray_cluster: RayTestCluster, kit_namespace: str) -> ConnectorSpec:
        type(self).cluster = ray_cluster
        return ray_spec(ray_cluster, kit_namespace, zero_copy=True)
