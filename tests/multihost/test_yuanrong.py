"""openYuanrong across hosts: clients on other hosts, a worker per host sharing one metastore, partitions.

Three test hosts (network namespaces, ``omni_core.testing.hosts``): a datasystem worker on host 1
(with the cluster's metastore) and one on host 2 (joining it); host 3 runs no worker.  Stage
processes run on a host: on a worker's host they reach it through its Unix socket and shared
memory, elsewhere over TCP only (see ``yuanrong_hosts``).  The TransferEngine connector's data
plane needs an Ascend NPU: here ``FakeAscendTransferEngine`` moves its bytes over TCP, while its
side channel, ``host: auto`` and the real engine's listener are the real ones.

The deadlines asserted below are the connectors' documented bounds against an unreachable peer
(``req_timeout_ms``, ``control_timeout_ms``), with a margin for a loaded machine: behaviour, not speed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from yuanrong_hosts import CLIENT_TIMEOUTS, HostWorker, StageProcess

from omni_core.testing import require
from omni_core.testing.hosts import NamespaceHosts, TestHost
from omni_yuanrong.testing import WorkerStartError

GET_WAIT_MS = 200
REQ_S = CLIENT_TIMEOUTS["req_timeout_ms"] / 1000
#: A get deadline long enough to try again a request that a healed partition left unanswered.
RETRY_WAIT_S = 2 * REQ_S
CONTROL_TIMEOUT_MS = 2000
#: What a loaded 2-core machine may add to a bound (process scheduling, not the connector).
MARGIN_S = 1.5
SMALL, LARGE = 1000, 8 << 20  # one ``set``; the zero-copy write path (two requests)
TE_POOL = {"memory_pool_device": "cpu", "memory_pool_size": 64 << 20, "control_timeout_ms": CONTROL_TIMEOUT_MS}


@pytest.fixture(scope="module", autouse=True)
def library_logs() -> Iterator[None]:
    """Client and TransferEngine logs into a temporary directory (they go to ~ and /tmp otherwise)."""
    logs = tempfile.mkdtemp(prefix="omni-yr-multihost-logs-")
    saved = {name: os.environ.get(name) for name in ("DATASYSTEM_CLIENT_LOG_DIR", "GLOG_log_dir")}
    os.environ.update(DATASYSTEM_CLIENT_LOG_DIR=logs, GLOG_log_dir=logs)
    yield
    for name, value in saved.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts() -> Iterator[NamespaceHosts]:
    with NamespaceHosts.for_test(3) as net:
        yield net


@pytest.fixture(scope="module")
def workers(hosts: NamespaceHosts) -> Iterator[tuple[HostWorker, HostWorker]]:
    """A worker on host 1 with the metastore, one on host 2 joining it."""
    started: list[HostWorker] = []
    try:
        started.append(HostWorker(hosts.host(1)))
        started.append(HostWorker(hosts.host(2), metastore=started[0].worker.metastore_address))
    except (WorkerStartError, ImportError, OSError) as exc:
        require(False, f"cannot start datasystem workers on test hosts: {exc}")
        raise
    yield started[0], started[1]
    with ThreadPoolExecutor(len(started)) as pool:
        list(pool.map(HostWorker.stop, started))


@pytest.fixture(scope="module")
def stages(hosts: NamespaceHosts, workers: tuple[HostWorker, HostWorker]) -> Iterator[dict[str, StageProcess]]:
    """``h1``/``h2``: a stage on host 1/2 using its own worker; ``h3``: a stage on host 3 using host 1's worker."""
    w1, w2 = workers
    specs = {
        "h1": (w1.prefix, w1.kv_extra()),
        "h2": (w2.prefix, w2.kv_extra(host="auto")),  # this host's address: where its worker listens
        "h3": (hosts.host(3).exec_prefix, w1.kv_extra()),
    }
    with ThreadPoolExecutor(len(specs)) as pool:
        processes = pool.map(lambda spec: StageProcess(spec[0], "YuanrongConnector", spec[1]), specs.values())
        started = dict(zip(specs, processes, strict=True))
    yield started
    with ThreadPoolExecutor(len(started)) as pool:
        list(pool.map(StageProcess.stop, started.values()))


def new_key(label: str) -> str:
    return f"{label}-{time.monotonic_ns()}"


def assert_delivered(put: dict[str, Any], got: dict[str, Any]) -> None:
    assert put["ok"], put
    assert got.get("found") and got["checksum"] == put["expected"], got


def worker_footprint(worker: HostWorker) -> tuple[int, int]:
    """(descriptors the worker process holds, TCP connections established to its port)."""
    fds = len(os.listdir(f"/proc/{worker.worker.pid}/fd"))
    lines = worker.host.run(["ss", "-Htn", "state", "established", f"( sport = :{worker.worker.port} )"]).stdout
    return fds, len(lines.splitlines())


def not_above(now: tuple[int, ...], before: tuple[int, ...]) -> bool:
    return all(a <= b for a, b in zip(now, before, strict=True))


def wait_for(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# -- what works across hosts -----------------------------------------------------------------------------
def test_a_stage_on_a_host_without_a_worker_puts_and_gets_over_tcp(stages: dict[str, StageProcess]) -> None:
    remote, local = stages["h3"], stages["h1"]
    for size in (SMALL, LARGE):
        key = new_key(f"remote-put-{size}")
        assert_delivered(put := remote.put(key, size), local.get(key))
        assert_delivered(put, remote.get(key))
        key = new_key(f"local-put-{size}")
        assert_delivered(local.put(key, size), remote.get(key))


def test_workers_on_two_hosts_sharing_a_metastore_serve_each_others_values(stages: dict[str, StageProcess]) -> None:
    for source, readers in (("h1", ("h2", "h3")), ("h2", ("h1", "h3")), ("h3", ("h2",))):
        for size in (SMALL, LARGE):
            key = new_key(f"from-{source}-{size}")
            put = stages[source].put(key, size)
            for reader in readers:
                assert_delivered(put, stages[reader].get(key))


def test_host_auto_connects_a_stage_to_the_worker_of_its_host(
    hosts: NamespaceHosts, stages: dict[str, StageProcess]
) -> None:
    health = stages["h2"].health()
    assert health["status"] == "healthy" and health["host"] == hosts.host(2).address


# -- partitions -----------------------------------------------------------------------------------------------
def test_a_stage_cut_off_from_its_worker_gets_errors_in_time_and_recovers_without_a_restart(
    hosts: NamespaceHosts, workers: tuple[HostWorker, HostWorker], stages: dict[str, StageProcess]
) -> None:
    remote, local, host3 = stages["h3"], stages["h1"], hosts.host(3)
    stored, big = new_key("stored"), new_key("big")
    assert local.put(stored, SMALL)["ok"] and local.put(big, 32 << 20)["ok"]
    assert remote.get(stored)["found"]
    client_before, worker_before = remote.resources(), worker_footprint(workers[0])
    errors_before = remote.health()["errors"]
    lost_small, lost_large = new_key("lost-small"), new_key("lost-large")

    with host3.partitioned():
        got = remote.get(stored)
        assert got["type"] == "DatasystemUnavailableError" and "req_timeout_ms=2000" in got["error"]
        assert workers[0].worker.endpoint in got["error"] and got["elapsed_s"] <= GET_WAIT_MS / 1000 + REQ_S + MARGIN_S
        timeouts_before = remote.health()["timeouts"]
        got = remote.get(stored, wait_s=RETRY_WAIT_S)  # tried again until its deadline, then raised
        assert got["type"] == "DatasystemUnavailableError" and got["elapsed_s"] <= RETRY_WAIT_S + REQ_S + MARGIN_S
        assert remote.health()["timeouts"] >= timeouts_before + 2
        small = remote.put(lost_small, SMALL)
        assert not small["ok"] and small["elapsed_s"] <= REQ_S + MARGIN_S
        large = remote.put(lost_large, LARGE)  # mcreate + mset_buffer: two requests
        assert not large["ok"] and large["elapsed_s"] <= 2 * REQ_S + MARGIN_S
        health = remote.health()
        assert health["status"] == "unhealthy" and health["errors"] == errors_before + 4
        assert health["timeouts"] >= 3 and health["quarantined_bytes"] >= LARGE
        assert "RPC unavailable" in health["last_error"]
        assert local.get(stored)["found"]  # the worker's own host is not affected

    # mid-transfer: a 32 MiB read through a 100 Mbit/s link is cut off after 0.5 s
    host3.limit_bandwidth("100mbit")
    try:
        remote.send({"op": "get", "edge": ["0", "1"], "key": big, "metadata": None})
        time.sleep(0.5)
        with host3.partitioned():
            got = remote.read()
    finally:
        host3.clear_bandwidth_limit()
    assert got["type"] == "DatasystemUnavailableError" and got["elapsed_s"] <= GET_WAIT_MS / 1000 + REQ_S + MARGIN_S

    # healed: the same process carries on
    assert_delivered(local.put(after := new_key("after"), LARGE), remote.get(after, wait_s=RETRY_WAIT_S))
    assert_delivered(remote.put(after2 := new_key("after"), LARGE), local.get(after2))
    assert remote.get(big)["found"]
    assert remote.health()["quarantined_bytes"] == 0
    # a put that timed out may still reach the worker once the network is back: cleanup deletes it
    remote.cleanup(lost_small)
    remote.cleanup(lost_large)
    assert not local.get(lost_small)["found"] and not local.get(lost_large)["found"]
    # nothing leaks: neither the stage's threads and descriptors nor the worker's connections and descriptors grow
    assert wait_for(lambda: remote.resources()["fds"] <= client_before["fds"]), (remote.resources(), client_before)
    assert remote.resources()["threads"] <= client_before["threads"]
    assert wait_for(lambda: not_above(worker_footprint(workers[0]), worker_before)), worker_before


def test_a_worker_cut_off_from_its_cluster_fails_its_stage_in_time_and_rejoins_when_healed(
    hosts: NamespaceHosts, stages: dict[str, StageProcess]
) -> None:
    on_h1, on_h2 = stages["h1"], stages["h2"]
    unseen = new_key("unseen")  # never read on host 2: its worker must fetch it from host 1's
    assert on_h1.put(unseen, SMALL)["ok"]
    errors_before = on_h2.health()["errors"]
    with hosts.host(2).partitioned():
        got = on_h2.get(unseen)
        assert got["type"] == "DatasystemUnavailableError" and got["elapsed_s"] <= GET_WAIT_MS / 1000 + REQ_S + MARGIN_S
        # the key's metadata lives on host 1's worker; the library retries within req_timeout_ms, but host 2's
        # worker answers its last try late: measured up to 2.8 x req_timeout_ms for the first put after the cut
        put = on_h2.put(new_key("cut-off"), SMALL)
        assert not put["ok"] and put["elapsed_s"] <= 3 * REQ_S + MARGIN_S
        assert on_h2.health()["errors"] == errors_before + 2
        # the rest of the cluster carries on
        assert_delivered(on_h1.put(key := new_key("meanwhile"), SMALL), on_h1.get(key))
    # healed: the first read over a worker-to-worker connection the partition broke goes unanswered; the get
    # tries again within its deadline
    assert_delivered(on_h1.put(unseen, SMALL), on_h2.get(unseen, wait_s=RETRY_WAIT_S))
    assert_delivered(on_h2.put(key := new_key("rejoined"), LARGE), on_h1.get(key, wait_s=RETRY_WAIT_S))


# -- the TransferEngine connector: host: auto, its side channel across hosts ---------------------------------
@pytest.fixture(scope="module")
def te_pair(hosts: NamespaceHosts) -> Iterator[tuple[StageProcess, StageProcess]]:
    """A sender on host 1 and a receiver on host 2, both ``host: auto``, data plane on FakeAscendTransferEngine."""
    name = "YuanrongTransferEngineConnector"
    with ThreadPoolExecutor(2) as pool:
        sender, receiver = pool.map(
            lambda args: StageProcess(args[0], name, {"role": args[1], "host": "auto", **TE_POOL}, engine="fake"),
            [(hosts.host(1).exec_prefix, "sender"), (hosts.host(2).exec_prefix, "receiver")],
        )
    yield sender, receiver
    sender.stop()
    receiver.stop()


def test_te_sender_with_host_auto_advertises_its_hosts_address(
    hosts: NamespaceHosts, te_pair: tuple[StageProcess, StageProcess]
) -> None:
    sender, receiver = te_pair
    assert sender.hello["info"]["host"] == hosts.host(1).address
    assert receiver.hello["info"]["host"] == hosts.host(2).address
    put = sender.put(key := new_key("te"), 1 << 20)
    assert put["metadata"]["source_host"] == hosts.host(1).address
    assert_delivered(put, receiver.get(key, metadata=put["metadata"]))
    assert sender.health()["pending"] == 0


def test_te_receiver_cut_off_from_its_sender_times_out_and_reads_once_healed(
    hosts: NamespaceHosts, te_pair: tuple[StageProcess, StageProcess]
) -> None:
    sender, receiver = te_pair
    put = sender.put(key := new_key("te-cut"), 1 << 20)
    timeouts_before = receiver.health()["timeouts"]
    with hosts.host(1).partitioned():
        got = receiver.get(key, metadata=put["metadata"])
        assert got["type"] == "TimeoutError" and f"{CONTROL_TIMEOUT_MS} ms" in got["error"]
        assert got["elapsed_s"] <= CONTROL_TIMEOUT_MS / 1000 + MARGIN_S
        assert receiver.health()["timeouts"] == timeouts_before + 1
        assert sender.health()["pending"] == 1  # never claimed: still there for the next read
    assert_delivered(put, receiver.get(key, metadata=put["metadata"]))
    assert sender.health()["pending"] == 0 and receiver.health()["unreleased"] == 0
    assert not receiver.get(key, metadata=put["metadata"])["found"]  # consumed once


# -- what a second host can reach --------------------------------------------------------------------------------
def listening(host: TestHost, pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on, as ``ss`` in the host's namespace says."""
    found = set()
    for line in host.run(["ss", "-Hltnp"]).stdout.splitlines():
        if f"pid={pid}," in line:
            address, _, port = line.split()[3].rpartition(":")
            found.add((address.strip("[]").removeprefix("::ffff:"), int(port)))
    return found


def reachable(host: TestHost, address: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2).close()"
    return host.run([sys.executable, "-c", code], check=False).returncode == 0


def test_another_host_reaches_exactly_the_worker_and_metastore_ports_on_the_workers_address(
    hosts: NamespaceHosts, workers: tuple[HostWorker, HostWorker]
) -> None:
    w1, w2 = workers
    head = {(w1.host.address, w1.worker.port), (w1.host.address, w1.worker.metastore_port)}
    assert listening(w1.host, w1.worker.pid) == head
    assert listening(w2.host, w2.worker.pid) == {(w2.host.address, w2.worker.port)}
    for worker in workers:
        for address, port in listening(worker.host, worker.worker.pid):
            assert reachable(hosts.host(3), address, port)
    assert not reachable(hosts.host(3), w1.host.address, free_port_in(w1.host))  # and nothing else answers there


def free_port_in(host: TestHost) -> int:
    code = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
    return int(host.run([sys.executable, "-c", code]).stdout)


def test_another_host_reaches_a_te_senders_side_channel_and_real_engine_port_on_its_address_only(
    hosts: NamespaceHosts,
) -> None:
    host1 = hosts.host(1)
    config = {"role": "sender", "host": "auto", **TE_POOL}
    sender = StageProcess(host1.exec_prefix, "YuanrongTransferEngineConnector", config, engine="real")
    try:
        info = sender.hello["info"]
        assert info["host"] == host1.address
        assert {(host1.address, info["zmq_port"]), (host1.address, info["rpc_port"])} <= listening(host1, sender.pid)
        assert all(address == host1.address for address, _ in listening(host1, sender.pid))
        assert reachable(hosts.host(2), host1.address, info["zmq_port"])
        assert reachable(hosts.host(2), host1.address, info["rpc_port"])
    finally:
        sender.stop()
