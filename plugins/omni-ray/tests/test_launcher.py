"""``omni run --launcher ray`` on a real three-node cluster: placement, environment, the table, clean-up, faults.

The runner runs on host 1 (the head's node) with ``RAY_ADDRESS`` set; every stage replica is a Ray actor on
the node its placement names.  After each run no replica actor, placement group, payload owner or stage
process may be left.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from omni_pipeline.testing import edge_rows, replica_rows

from omni_core import StagePlacement
from omni_core.testing import require
from omni_core.testing.hosts import NamespaceHosts
from omni_ray.launcher import bundle_shape
from omni_ray.owner import OWNER_PREFIX
from omni_ray.testing import HOST_LABEL, WORKER_RESOURCE, RayTestCluster, host_resource

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RAY_EXAMPLE = EXAMPLES / "thinker_talker_vocoder_ray_connector.yaml"
TE_EXAMPLE = EXAMPLES / "thinker_talker_vocoder_ray.yaml"


# -- helpers ---------------------------------------------------------------------------------
def write_config(tmp_path: Path, base: Path = RAY_EXAMPLE, **sections: Any) -> Path:
    """``base`` with ``sections`` replacing its top-level keys (``workload`` entries are merged)."""
    doc = yaml.safe_load(base.read_text())
    workload = {**doc.get("workload", {}), **sections.pop("workload", {})}
    doc.update(sections, workload=workload)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def fast_connector(call_timeout_s: float = 3.0) -> dict[str, Any]:
    """RayConnector that gives up on an unreachable owner quickly (a lost node's payloads)."""
    return {"ray": {"name": "RayConnector", "extra": {"call_timeout_s": call_timeout_s}}}


@pytest.fixture
def start_run(ray_cluster: RayTestCluster) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``start_run(config, *args)``: ``omni run`` on host 1 against the cluster; killed after the test if it runs."""
    runs: list[subprocess.Popen[str]] = []

    def start(config: Path, *args: str) -> subprocess.Popen[str]:
        command = [*ray_cluster.head.exec_prefix, sys.executable, "-m", "omni_core.cli.main", "run", "--no-progress"]
        runs.append(subprocess.Popen([*command, str(config), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=ray_cluster.env()))  # fmt: skip
        return runs[-1]

    yield start
    for run in runs:
        if run.poll() is None:
            run.kill()
            run.communicate()


def finish(run: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = run.communicate(timeout=timeout)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    return run.returncode, out, err


def wait_for_stages(cluster: RayTestCluster, count: int, run: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(cluster.stage_processes()) < count:
        assert run.poll() is None, f"the run ended early: {run.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the stage replicas did not start"
        time.sleep(0.1)


def run_owners() -> list[Any]:
    """Handles of the payload owners of runs (namespaces ``omni-run-*``)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return [ray.get_actor(a["name"], namespace=a["namespace"]) for a in named
            if a["name"].startswith(OWNER_PREFIX) and a["namespace"].startswith("omni-run-")]  # fmt: skip


def wait_for_traffic(run: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until a payload owner of the run holds a payload: the stages are up and requests flow."""
    deadline = time.monotonic() + timeout
    while True:
        assert run.poll() is None, f"the run ended early: {run.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no payload was put"
        with contextlib.suppress(ray.exceptions.RayError, ValueError):
            if any(ray.get(owner.stats.remote(), timeout=5)["held"] for owner in run_owners()):
                return
        time.sleep(0.05)


def assert_nothing_left(cluster: RayTestCluster, timeout: float = 30) -> None:
    """Every actor, placement group, payload owner and stage process of the run is gone (Ray removes them
    asynchronously: wait a little)."""
    deadline = time.monotonic() + timeout
    found = cluster.leftovers()
    while any(found.values()):
        assert time.monotonic() < deadline, f"left behind: {found}"
        time.sleep(0.2)
        found = cluster.leftovers()


@pytest.fixture
def killed_nodes(ray_cluster: RayTestCluster) -> Iterator[list[int]]:
    """Hosts whose node a test killed: started again afterwards, so the cluster has three nodes for the next."""
    killed: list[int] = []
    yield killed
    for index in killed:
        ray_cluster.start_node(index)
    ray_cluster.wait_nodes(3)


# -- placement, environment, the table -----------------------------------------------------------
def test_each_stage_runs_where_its_placement_says_with_its_environment(
    ray_cluster: RayTestCluster, tmp_path, start_run
):
    """host (by address), resources and labels: one stage per node; each replica knows its id and its node."""
    h = ray_cluster.hosts
    config = write_config(
        tmp_path,
        hosts={"h1": {"address": h.host(1).address}},
        placement={"stages": {0: {"host": "h1"}, 1: {"resources": {host_resource(2): 0.01}},
                              2: {"labels": {HOST_LABEL: "h3"}}}},
        workload={"requests": 12},
    )  # fmt: skip
    run = start_run(config)
    wait_for_stages(ray_cluster, 3, run)
    environs = {}
    for pid, index in ray_cluster.stage_processes().items():
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        environs[index] = {k: env.get(k.encode(), b"").decode()
                           for k in ("OMNI_REPLICA_ID", "OMNI_HOST_IP", "OMNI_RAY_NAMESPACE")}  # fmt: skip
    code, out, err = finish(run)
    assert code == 0, err[-3000:]
    assert replica_rows(out) == {f"stage {i - 1} replica 0": (h.host(i).address, 12) for i in (1, 2, 3)}
    assert "host (ray launcher)" in out
    assert all(row[0] == "12" for row in edge_rows(out).values()) and len(edge_rows(out)) == 2
    assert {i: (e["OMNI_REPLICA_ID"], e["OMNI_HOST_IP"]) for i, e in environs.items()} == {
        i: ("0", h.host(i).address) for i in (1, 2, 3)
    }
    namespaces = {e["OMNI_RAY_NAMESPACE"] for e in environs.values()}
    assert len(namespaces) == 1 and namespaces.pop().startswith("omni-run-")
    assert_nothing_left(ray_cluster)


def test_the_mooncake_example_spreads_its_stages_over_three_nodes(ray_cluster: RayTestCluster, start_run) -> None:
    """examples/thinker_talker_vocoder_ray.yaml: STRICT_SPREAD, Mooncake TE between the nodes, host: auto."""
    require(importlib.util.find_spec("omni_mooncake") is not None, "omni-mooncake is not installed")
    code, out, err = finish(start_run(TE_EXAMPLE))
    assert code == 0, err[-3000:]
    nodes = {row[0] for row in replica_rows(out).values()}
    assert nodes == {host.address for host in ray_cluster.hosts.hosts}
    assert all(row[0] == "16" for row in edge_rows(out).values()) and len(edge_rows(out)) == 2
    assert_nothing_left(ray_cluster)


def test_a_placement_group_bundle_per_replica(ray_cluster: RayTestCluster, tmp_path, start_run) -> None:
    """strategy SPREAD with two talker replicas, each bundle needing the one worker unit of a worker node."""
    config = write_config(
        tmp_path,
        placement={"strategy": "SPREAD", "stages": {1: {"resources": {WORKER_RESOURCE: 1}}}},
        workload={"requests": 8, "replicas": {1: 2}},
    )
    code, out, err = finish(start_run(config))
    assert code == 0, err[-3000:]
    rows = replica_rows(out)
    talkers = {rows[f"stage 1 replica {r}"][0] for r in (0, 1)}
    assert talkers == {ray_cluster.hosts.host(2).address, ray_cluster.hosts.host(3).address}
    assert all(row[1] > 0 for row in rows.values())
    assert_nothing_left(ray_cluster)


def test_a_stage_no_node_can_take_is_refused_before_anything_starts(
    ray_cluster: RayTestCluster, tmp_path, start_run
) -> None:
    config = write_config(tmp_path, placement={"stages": {1: {"resources": {"tpu_v9": 1}, "num_gpus": 1}}})
    code, _, err = finish(start_run(config), timeout=120)
    assert code == 1
    assert "placement.stages.1: no node of the Ray cluster offers tpu_v9: 1, GPU: 1" in err, err[-2000:]
    assert_nothing_left(ray_cluster)


def test_an_undefined_host_address_is_named(ray_cluster: RayTestCluster, tmp_path, start_run) -> None:
    config = write_config(tmp_path, hosts={"far": {"address": "198.18.255.77"}},
                          placement={"stages": {0: {"host": "far"}}})  # fmt: skip
    code, _, err = finish(start_run(config), timeout=120)
    assert code == 1 and "placement.stages.0" in err and "host far (198.18.255.77)" in err, err[-2000:]
    assert_nothing_left(ray_cluster)


# -- stopping ----------------------------------------------------------------------------------------
def test_ctrl_c_removes_every_actor_placement_group_and_owner(ray_cluster: RayTestCluster, tmp_path, start_run) -> None:
    config = write_config(tmp_path, placement={"strategy": "PACK"}, workload={"requests": 100000})
    run = start_run(config)
    wait_for_traffic(run)  # payloads held by owners, a placement group reserved
    during = ray_cluster.leftovers()
    assert during["placement groups"] and during["payload owners"] and len(during["replica actors"]) == 3
    run.send_signal(signal.SIGINT)
    code, _, err = finish(run, timeout=120)
    assert code == 130 and "interrupted" in err, err[-2000:]
    assert_nothing_left(ray_cluster)


# -- faults --------------------------------------------------------------------------------------
def test_a_node_killed_mid_run_has_its_requests_rerouted(
    ray_cluster: RayTestCluster, tmp_path, killed_nodes, start_run
) -> None:
    """Two talkers, one per worker node; host 2's raylet is SIGKILLed mid-run: its requests go to host 3's
    talker and every payload still arrives intact, exactly once."""
    h = ray_cluster.hosts
    config = write_config(
        tmp_path,
        connectors=fast_connector(),
        hosts={"h1": {"address": h.host(1).address}},
        placement={"stages": {0: {"host": "h1"}, 1: {"resources": {WORKER_RESOURCE: 1}}, 2: {"host": "h1"}}},
        workload={"requests": 150, "replicas": {1: 2}, "timeout_s": 20},
    )
    run = start_run(config)
    wait_for_traffic(run)
    killed_nodes.append(2)
    ray_cluster.kill_node(2)
    assert run.poll() is None, "the run ended before the node was killed"
    code, out, err = finish(run)
    assert code == 0, err[-3000:]
    assert all(row[0] == "150" for row in edge_rows(out).values()) and len(edge_rows(out)) == 2
    rows = replica_rows(out)
    by_node = {rows[f"stage 1 replica {r}"][0]: rows[f"stage 1 replica {r}"][1] for r in (0, 1)}
    assert set(by_node) == {h.host(2).address, h.host(3).address}
    assert by_node[h.host(3).address] > by_node[h.host(2).address]  # the survivor took over
    assert "every payload arrived intact, exactly once" in out
    assert_nothing_left(ray_cluster)


def test_losing_the_only_replica_of_a_stage_fails_naming_the_node_and_stage(
    ray_cluster: RayTestCluster, tmp_path, killed_nodes, start_run
) -> None:
    h = ray_cluster.hosts
    config = write_config(
        tmp_path,
        connectors=fast_connector(),
        hosts={f"h{i}": {"address": h.host(i).address} for i in (1, 3)},
        placement={"stages": {0: {"host": "h1"}, 1: {"host": "h3"}, 2: {"host": "h1"}}},
        workload={"requests": 100000, "timeout_s": 20},
    )
    run = start_run(config)
    wait_for_traffic(run)
    killed_nodes.append(3)
    ray_cluster.kill_node(3)
    code, _, err = finish(run)
    assert code == 1, err[-3000:]
    assert "stage 1: no live replica left" in err and f"on node {h.host(3).address}" in err, err[-3000:]
    assert_nothing_left(ray_cluster)


# -- a local Ray --------------------------------------------------------------------------------
def test_without_an_address_a_local_ray_is_started_and_stopped(tmp_path) -> None:
    """No RAY_ADDRESS: the launcher starts a one-node Ray for the run (on a test host of its own) and stops it."""
    home = tempfile.mkdtemp(prefix="omr")  # short: Ray's socket paths must fit in 107 bytes
    with NamespaceHosts.for_test(1) as net, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, home, ignore_errors=True)
        host = net.host(1)
        config = write_config(tmp_path, workload={"requests": 6})
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run(
            [*host.exec_prefix, sys.executable, "-m", "omni_core.cli.main", "run", "--no-progress", "--launcher",
             "ray", str(config)],
            capture_output=True, text=True, timeout=300,
            env={**env, "RAY_TMPDIR": home, "HOME": home},  # Ray writes ~/.ray/auth_token for a local cluster
        )  # fmt: skip
        ray_left = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout.split()
    assert done.returncode == 0, done.stderr[-3000:]
    nodes = {row[0] for row in replica_rows(done.stdout).values()}
    assert len(nodes) == 1 and nodes <= {host.address, "127.0.0.1"}  # Ray's pick: without a default route, loopback
    assert ray_left == [], "the local Ray outlived the run"


def test_bundle_shapes_follow_the_stage() -> None:
    assert bundle_shape(StagePlacement()) == {"CPU": 0.01}
    assert bundle_shape(StagePlacement(resources={"x": 2}, num_cpus=2, num_gpus=1)) == {"CPU": 2, "x": 2, "GPU": 1}
