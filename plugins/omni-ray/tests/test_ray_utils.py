"""omni_ray's helpers for stages on a cluster: placement groups, node IPs, stage environments."""

from __future__ import annotations

import os

import pytest
import ray
from ray.util.placement_group import placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from omni_core import ConfigError
from omni_ray import (
    bundle_node_ips,
    create_placement_group,
    get_node_ip,
    kill_ray_actor,
    node_ips,
    remove_placement_group,
    stage_env,
)
from omni_ray.testing import RayTestCluster, host_resource


def addresses(cluster: RayTestCluster) -> list[str]:
    return sorted(host.address for host in cluster.hosts.hosts)


def live_groups() -> list[str]:
    return [g["placement_group_id"] for g in placement_group_table().values() if g["state"] != "REMOVED"]


def test_strict_spread_puts_one_stage_on_each_node(ray_cluster: RayTestCluster) -> None:
    group = create_placement_group(3, strategy="STRICT_SPREAD", bundle={"CPU": 1})
    try:
        assert sorted(bundle_node_ips(group)) == addresses(ray_cluster)
    finally:
        remove_placement_group(group)
    assert placement_group_table(group)["state"] == "REMOVED"


def test_a_group_that_cannot_be_placed_is_removed_and_explained(ray_cluster: RayTestCluster) -> None:
    with pytest.raises(TimeoutError, match=r"4 x \{'CPU': 1.0\} \(STRICT_SPREAD\)") as raised:
        create_placement_group(4, strategy="STRICT_SPREAD", timeout_s=2)
    assert all(address in str(raised.value) for address in addresses(ray_cluster))  # what each node has
    assert live_groups() == []


@pytest.mark.parametrize(("kwargs", "field"), [({"strategy": "SPREAD_THIN"}, "strategy"), ({}, "number_of_stages")])
def test_bad_arguments_are_refused_up_front(ray_cluster: RayTestCluster, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        create_placement_group(3 if kwargs else 0, **kwargs)


def test_node_ip_lookup(ray_cluster: RayTestCluster) -> None:
    ips = node_ips()
    assert sorted(ips.values()) == addresses(ray_cluster)
    assert get_node_ip() == ray_cluster.head.address  # this process is a driver on host 1's node
    for node_id, ip in ips.items():
        assert get_node_ip(node_id) == ip
    with pytest.raises(ValueError, match="no live Ray node"):
        get_node_ip("0" * 56)


@ray.remote(num_cpus=0)
class EnvProbe:
    def report(self) -> dict[str, dict[str, str]]:
        keys = ("OMNI_STAGE_ID", "OMNI_REPLICA_ID", "OMNI_HOST_IP")
        return {"environ": {k: os.environ.get(k, "") for k in keys}, "computed": stage_env("talker", 1)}


def test_stage_env_names_the_stage_replica_and_its_node(ray_cluster: RayTestCluster) -> None:
    """A stage replica placed on host 2 through a bundle gets that node's IP as OMNI_HOST_IP."""
    group = create_placement_group(1, bundle={"CPU": 0.01, host_resource(2): 0.01})
    probe = None
    try:
        (node_ip,) = bundle_node_ips(group)
        assert node_ip == ray_cluster.hosts.host(2).address
        probe = EnvProbe.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0),
            runtime_env={"env_vars": stage_env("talker", 1, node_ip=node_ip)},
        ).remote()
        report = ray.get(probe.report.remote(), timeout=60)
    finally:
        kill_ray_actor(probe)
        remove_placement_group(group)
    expected = {"OMNI_STAGE_ID": "talker", "OMNI_REPLICA_ID": "1", "OMNI_HOST_IP": node_ip}
    assert report["environ"] == expected
    assert report["computed"] == expected  # where the stage runs, the node IP is found by itself
