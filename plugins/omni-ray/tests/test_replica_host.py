"""ReplicaHost: a stage replica's command run by a Ray actor on its node, driven over TCP by the runner."""

from __future__ import annotations

import json
import time

import pytest
import ray

from omni_ray.replica_host import ReplicaHost, ReplicaListener
from omni_ray.testing import RayTestCluster, host_resource

ECHO = (
    "import json, os, sys\n"
    "hello = {'ready': True, 'ip': os.environ['OMNI_HOST_IP'], 'stage': os.environ.get('STAGE')}\n"
    "print(json.dumps(hello), flush=True)\n"
    "for line in sys.stdin:\n"
    "    print(json.dumps({'echo': json.loads(line)}), flush=True)\n"
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False


@pytest.fixture
def started(ray_cluster: RayTestCluster):
    listener = ReplicaListener(ray_cluster.hosts.gateway)  # this process's side of the bridge
    actor = ray.remote(ReplicaHost).options(num_cpus=0, resources={host_resource(2): 0.01}).remote()
    info = ray.get(actor.start.remote(["-c", ECHO], {"STAGE": "1"}, listener.address, listener.token))
    conn = listener.accept(timeout=60).makefile("rwb")
    yield actor, info, conn
    conn.close()
    listener.close()
    ray.kill(actor)


def test_replica_runs_on_its_node_and_talks_json_lines(ray_cluster: RayTestCluster, started) -> None:
    actor, info, conn = started
    assert info["node_ip"] == ray_cluster.hosts.host(2).address
    assert json.loads(conn.readline()) == {"ready": True, "ip": info["node_ip"], "stage": "1"}
    conn.write(b'{"op": "ping"}\n')
    conn.flush()
    assert json.loads(conn.readline()) == {"echo": {"op": "ping"}}
    assert ray.get(actor.wait.remote()) is None


def test_replica_dies_with_its_actor(started) -> None:
    actor, info, conn = started
    assert json.loads(conn.readline())["ready"]
    assert alive(info["pid"])
    ray.kill(actor)
    deadline = time.monotonic() + 20
    while alive(info["pid"]):
        assert time.monotonic() < deadline, "the replica's command outlived its actor"
        time.sleep(0.1)
    assert conn.readline() == b""  # the runner sees the connection end


def test_stop_ends_the_command(started) -> None:
    actor, info, conn = started
    assert json.loads(conn.readline())["ready"]
    assert ray.get(actor.stop.remote(5.0)) == -15
    assert not alive(info["pid"])


def test_a_stranger_without_the_token_is_refused(ray_cluster: RayTestCluster) -> None:
    import socket

    listener = ReplicaListener(ray_cluster.hosts.gateway)
    with socket.create_connection(listener.address) as stranger:
        stranger.sendall(b"guess\n")
        with pytest.raises(PermissionError, match="token"):
            listener.accept(timeout=10)
    listener.close()
