"""RayConnector across the nodes of a real cluster: owner lifetime, broadcast, cleanup, zero copy, health."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import ray
from conftest import ray_spec

from omni_core import ConfigError, ConnectorSpec, OmniConnectorBase, OmniConnectorFactory
from omni_core.testing import checksum, make_payload
from omni_ray.owner import owner_names
from omni_ray.testing import RayTestCluster

EDGE = ("0", "1")


@pytest.fixture
def make_connector() -> Iterator[Callable[[ConnectorSpec], OmniConnectorBase]]:
    made: list[OmniConnectorBase] = []

    def make(spec: ConnectorSpec) -> OmniConnectorBase:
        made.append(OmniConnectorFactory.create_connector(spec))
        return made[-1]

    yield make
    for connector in made:
        connector.close()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.1)
    return value


def store_bytes_used() -> int:
    """Bytes in use in the cluster's object stores, as the raylets report them to the GCS."""
    return int(ray.cluster_resources()["object_store_memory"] - ray.available_resources()["object_store_memory"])


def expected_checksum(kind: str) -> str:
    if kind.startswith("bytes:"):
        import torch

        return checksum(torch.ones(int(kind.removeprefix("bytes:")), dtype=torch.uint8))
    return checksum(make_payload(kind))


@pytest.mark.parametrize("kind", ["request_dict", f"bytes:{8 << 20}"])  # in the owner's memory / its object store
def test_payload_outlives_its_putter_and_crosses_nodes(ray_cluster: RayTestCluster, namespace: str, kind: str) -> None:
    """Put on host 2, SIGKILL the putter, get on host 3: the owner actor keeps the payload for the reader."""
    spec = ray_spec(ray_cluster, namespace)
    putter = ray_cluster.hosts.host(2).child_connector(spec)
    answer = putter.call({"op": "put", "from": "0", "to": "1", "key": "outlives", "kind": kind})
    putter.kill()
    assert answer["ok"], answer
    assert answer["metadata"]["ray"]["node_ip"] == ray_cluster.hosts.host(2).address
    with ray_cluster.hosts.host(3).child_connector(spec) as getter:
        got = getter.call({"op": "get", "from": "0", "to": "1", "key": "outlives",
                           "metadata": answer["metadata"], "timeout": 20})  # fmt: skip
    assert got["found"], got
    assert got["checksum"] == expected_checksum(kind)
    assert got["size"] == answer["size"]


def test_metadata_is_plain_json(ray_cluster: RayTestCluster, namespace: str, make_connector: Callable) -> None:
    connector = make_connector(ray_spec(ray_cluster, namespace))
    ok, size, metadata = connector.put(*EDGE, "json-meta", {"a": 1})
    assert ok
    assert json.loads(json.dumps(metadata)) == metadata
    assert metadata["size"] == size and metadata["ray"]["node_ip"] == ray_cluster.head.address


def test_get_without_metadata_finds_a_payload_put_on_another_node(
    ray_cluster: RayTestCluster, namespace: str, make_connector: Callable
) -> None:
    spec = ray_spec(ray_cluster, namespace)
    with ray_cluster.hosts.host(3).child_connector(spec) as putter:
        answer = putter.call({"op": "put", "from": "0", "to": "1", "key": "no-meta", "kind": "request_dict"})
        assert answer["ok"], answer
        reader = make_connector(spec)
        result = reader.get_with_deadline(*EDGE, "no-meta", None, deadline=time.monotonic() + 20)
    assert result is not None
    assert checksum(result[0]) == checksum(make_payload("request_dict"))


def test_broadcast_to_readers_on_two_nodes(
    ray_cluster: RayTestCluster, namespace: str, make_connector: Callable
) -> None:
    """readers: 2 -> a reader on host 2 and one on host 3 each get it once; a third reader gets nothing."""
    spec = ray_spec(ray_cluster, namespace, readers=2)
    producer = make_connector(spec)
    payload = make_payload("tensor_in_dict")
    ok, _, metadata = producer.put(*EDGE, "fan-out", payload)
    assert ok
    for index in (2, 3):
        with ray_cluster.hosts.host(index).child_connector(spec) as reader:
            got = reader.call({"op": "get", "from": "0", "to": "1", "key": "fan-out", "metadata": metadata,
                               "timeout": 20})  # fmt: skip
        assert got["found"] and got["checksum"] == checksum(payload), (index, got)
    third = make_connector(spec)
    assert third.get(*EDGE, "fan-out", metadata) is None
    assert producer.health()["owner"]["held"] == 0


def test_cleanup_frees_the_object(ray_cluster: RayTestCluster, namespace: str, make_connector: Callable) -> None:
    spec = ray_spec(ray_cluster, namespace)
    connector = make_connector(spec)
    connector.put(*EDGE, "warm-up", b"x")  # the owner is up: its own memory is not counted below
    connector.get(*EDGE, "warm-up")
    before = store_bytes_used()
    nbytes = 32 << 20
    ok, _, metadata = connector.put(*EDGE, "freed", np.ones(nbytes, dtype=np.uint8))
    assert ok
    wait_for(lambda: store_bytes_used() >= before + nbytes, what="the payload in the object store")
    assert connector.health()["owner"]["held_bytes"] >= nbytes
    connector.cleanup("freed")
    wait_for(lambda: store_bytes_used() < before + nbytes, what="the object freed after cleanup")
    assert connector.get(*EDGE, "freed", metadata) is None
    assert connector.health()["owner"]["held"] == 0


def test_cleanup_leaves_other_putters_payloads(
    ray_cluster: RayTestCluster, namespace: str, make_connector: Callable
) -> None:
    spec = ray_spec(ray_cluster, namespace)
    putter, other = make_connector(spec), make_connector(spec)
    ok, _, metadata = putter.put(*EDGE, "mine", {"v": 1})
    assert ok
    other.cleanup("mine")
    assert other.get(*EDGE, "mine", metadata) == ({"v": 1}, metadata["size"])


def test_zero_copy_get_returns_read_only_views(
    ray_cluster: RayTestCluster, namespace: str, make_connector: Callable
) -> None:
    array = np.arange(1 << 20, dtype=np.float32)
    producer = make_connector(ray_spec(ray_cluster, namespace))
    viewer = make_connector(ray_spec(ray_cluster, namespace, zero_copy=True))
    ok, _, metadata = producer.put(*EDGE, "zc", {"a": array})
    assert ok
    got, _ = viewer.get(*EDGE, "zc", metadata)
    assert np.array_equal(got["a"], array)
    assert not got["a"].flags.writeable and not got["a"].flags.owndata  # a view into the object store
    ok, _, metadata = producer.put(*EDGE, "copy", {"a": array})
    copied, _ = producer.get(*EDGE, "copy", metadata)
    assert copied["a"].flags.writeable and np.array_equal(copied["a"], array)


def test_unread_payloads_expire(ray_cluster: RayTestCluster, namespace: str, make_connector: Callable) -> None:
    connector = make_connector(ray_spec(ray_cluster, namespace, ttl_seconds=0.3))
    ok, _, metadata = connector.put(*EDGE, "stale", {"x": 1})
    assert ok
    wait_for(lambda: connector.health()["owner"]["expired"] >= 1, what="the payload expired")
    assert connector.get(*EDGE, "stale", metadata) is None


def test_idle_owner_exits_and_comes_back(ray_cluster: RayTestCluster, namespace: str, make_connector: Callable) -> None:
    """Nothing held and no calls for owner_idle_s: the owner actor exits; the next put starts a new one."""
    spec = ray_spec(ray_cluster, namespace, owner_idle_s=0.5)
    connector = make_connector(spec)
    ok, _, metadata = connector.put(*EDGE, "once", {"x": 1})
    assert ok and connector.get(*EDGE, "once", metadata) is not None
    wait_for(lambda: not owner_names(namespace), what="the idle owner gone")
    ok, _, metadata = connector.put(*EDGE, "again", {"x": 2})
    assert ok and connector.get(*EDGE, "again", metadata) == ({"x": 2}, metadata["size"])


def test_health_reports_node_and_owner(ray_cluster: RayTestCluster, namespace: str, make_connector: Callable) -> None:
    connector = make_connector(ray_spec(ray_cluster, namespace))
    connector.put(*EDGE, "h", {"x": 1})
    health = connector.health()
    assert health["status"] == "healthy" and health["puts"] == 1
    assert health["node_ip"] == ray_cluster.head.address
    assert health["owner"]["node_ip"] == ray_cluster.head.address and health["owner"]["held"] == 1
    connector.close()
    assert connector.health()["status"] == "unhealthy"


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"readers": 0}, "readers"), ({"namespace": ""}, "namespace"), ({"call_timeout_s": 0}, "call_timeout_s")],
)
def test_bad_config_names_the_key(ray_cluster: RayTestCluster, extra: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        OmniConnectorFactory.create_connector(ConnectorSpec("RayConnector", {"address": ray_cluster.address, **extra}))


def test_no_cluster_fails_fast_and_says_how_to_start_one() -> None:
    code = (
        "from omni_core import ConnectorSpec, OmniConnectorFactory\n"
        "OmniConnectorFactory.create_connector(ConnectorSpec('RayConnector', {'address': '127.0.0.1:9'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ConnectionError" in result.stderr and "127.0.0.1:9" in result.stderr and "ray start" in result.stderr
